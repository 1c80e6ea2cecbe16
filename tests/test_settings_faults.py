"""Issue 12, settings: values that cannot train, folders that cannot be folders, misspelt names.

Each must fail as ONE line (`ConfigError`) naming the key and where it came from, or, for a `VLMFT_*`
variable that is not a setting, warn naming the setting it most likely means. The CLI side (one line,
exit 2) is in tests/cli/test_errors.py.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from vlmft_cli.errors import ConfigError, VlmftWarning
from vlmft_cli.settings import Settings, resolve_settings

ROOT = Path(__file__).resolve().parents[1]


def refused(**kwargs) -> str:
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as caught:
        resolve_settings(**kwargs)
    message = str(caught.value)
    assert message and "\n" not in message, message
    return message


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- 1. non-finite and absurd values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("num_epochs: .inf\n", "num_epochs"),
        ("save_every_hours: .inf\n", "save_every_hours"),
        ("learning_rate: .inf\n", "learning_rate"),
        ("learning_rate: .nan\n", "learning_rate"),
        ("memory_cap_gb: .inf\n", "memory_cap_gb"),
        ("weight_decay: .inf\n", "weight_decay"),
        ("max_grad_norm: .inf\n", "max_grad_norm"),
        ("fps: .inf\n", "fps"),
    ],
)
def test_non_finite_values_in_a_config_file_are_refused_naming_key_and_file(tmp_path, text, key):
    config = write(tmp_path / "c.yaml", text)
    message = refused(config_file=config)
    assert f"invalid setting {key}=" in message and f"config file {config}" in message
    assert "finite" in message


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_learning_rate_from_the_command_line_is_refused(value):
    message = refused(cli={"learning_rate": value})
    assert message.startswith("invalid setting learning_rate=") and "from command line" in message


@pytest.mark.parametrize("text", ["inf", "Infinity", "nan", "-inf"])
def test_non_finite_learning_rate_from_the_environment_is_refused_naming_the_variable(text):
    message = refused(environ={"VLMFT_LEARNING_RATE": text})
    assert "learning_rate" in message and "environment (VLMFT_LEARNING_RATE)" in message


def test_a_learning_rate_above_one_is_refused():
    assert "learning_rate=5.0 from command line" in refused(cli={"learning_rate": 5.0})
    assert resolve_settings(cli={"learning_rate": 1.0}, environ={}).settings.learning_rate == 1.0


@pytest.mark.parametrize("text", ["seed: 1.0e+20\n", "seed: 100000000000000000000\n", "seed: 1e20\n", "seed: -1\n"])
def test_a_seed_out_of_range_is_refused(tmp_path, text):
    assert "invalid setting seed=" in refused(config_file=write(tmp_path / "s.yaml", text))


@pytest.mark.parametrize("pattern", ["(", "[a-", "*q_proj", "(?P<x"])
def test_a_lora_pattern_that_does_not_compile_is_refused(tmp_path, pattern):
    config = write(tmp_path / "p.yaml", f"lora_pattern: {pattern!r}\n")
    message = refused(config_file=config)
    assert f"invalid setting lora_pattern={pattern!r} from config file {config}" in message
    assert "regular expression" in message


def test_a_lora_pattern_that_compiles_is_kept():
    pattern = r"^(?:.*\.)?language_model\..*(?:q_proj|v_proj)$"
    assert resolve_settings(cli={"lora_pattern": pattern}, environ={}).settings.lora_pattern == pattern


@pytest.mark.parametrize("projections", [["q proj"], ["q_proj", ""], ["model.q_proj"], ["(q|k)_proj"]])
def test_lora_projections_must_be_module_names(projections):
    assert "invalid setting lora_projections=" in refused(cli={"lora_projections": projections})


def test_no_projections_and_no_pattern_would_adapt_nothing():
    message = refused(environ={"VLMFT_LORA_PROJECTIONS": "[]"})
    assert "lora_projections" in message and "VLMFT_LORA_PROJECTIONS" in message
    kept = resolve_settings(environ={"VLMFT_LORA_PROJECTIONS": "[]", "VLMFT_LORA_PATTERN": ".*q_proj"}).settings
    assert kept.lora_projections == [] and kept.lora_pattern == ".*q_proj"


# --- 2. folder settings that cannot be folders -----------------------------------------------------------


def test_out_and_home_that_are_files_are_refused_naming_the_variable(tmp_path):
    a_file = write(tmp_path / "a-file", "x")
    message = refused(environ={"VLMFT_OUT": "/dev/null"})
    assert "out='/dev/null' from environment (VLMFT_OUT)" in message and "not a folder" in message
    message = refused(environ={"VLMFT_HOME": str(a_file / "cache")})
    assert f"home='{a_file / 'cache'}' from environment (VLMFT_HOME)" in message and f"{a_file} is not a folder" in message
    assert "out=" in refused(cli={"out": a_file})


def test_folders_that_do_not_exist_yet_are_fine(tmp_path):
    settings = resolve_settings(cli={"out": tmp_path / "new" / "experiments", "home": tmp_path / "home"}, environ={}).settings
    assert settings.out == tmp_path / "new" / "experiments" and not settings.out.exists()


# --- 3. names that are not settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("VLMFT_LR", "VLMFT_LEARNING_RATE"),  # --lr is learning_rate's flag
        ("VLMFT_EPOCHS", "VLMFT_NUM_EPOCHS"),
        ("VLMFT_LEARNING_RAT", "VLMFT_LEARNING_RATE"),
        ("VLMFT_LORA_RANK", "VLMFT_LORA_R"),
        ("VLMFT_PER_DEVICE_TRAIN_BATCH_SIZE", "VLMFT_MICRO_BATCH_SIZE"),
    ],
)
def test_a_vlmft_variable_that_is_no_setting_warns_naming_the_closest_one(variable, meant):
    with pytest.warns(VlmftWarning) as caught:
        settings = resolve_settings(environ={variable: "1e-4"}).settings
    [warning] = [w for w in caught if issubclass(w.category, VlmftWarning)]
    text = str(warning.message)
    assert variable in text and "not a vlmft setting" in text and f"did you mean {meant}?" in text
    assert settings.learning_rate == 4e-5  # ignored, as said


def test_a_vlmft_variable_with_no_close_setting_still_warns():
    with pytest.warns(VlmftWarning, match="VLMFT_ZZZ is not a vlmft setting and is ignored$"):
        resolve_settings(environ={"VLMFT_ZZZ": "1"})


def test_the_variables_vlmft_reads_besides_settings_do_not_warn():
    """Every non-setting `VLMFT_*` name the code reads (found in the source, not taken from a list in it)
    resolves without a warning: a new one must be added to those the check skips."""
    read = set()
    for folder in ("vlmft_cli", "plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"\bVLMFT_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    others = {name for name in read if name.removeprefix("VLMFT_").lower() not in Settings.model_fields}
    assert {"VLMFT_DEBUG", "VLMFT_CONFIG_DIR", "VLMFT_LOAD_PLUGINS"} <= others
    with warnings.catch_warnings():
        warnings.simplefilter("error", VlmftWarning)
        resolve_settings(environ=dict.fromkeys(others, "1"))


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("learning_rat", "did you mean 'learning_rate'?"),
        ("lora_alfa", "did you mean 'lora_alpha'?"),
        ("lr", "--lr is the command-line flag of 'learning_rate'"),
        ("epochs", "--epochs is the command-line flag of 'num_epochs'"),
        # LLaMA-Factory / ms-swift / transformers names and the vlmft equivalent they map to
        ("lora_rank", "in vlmft, lora_r"),
        ("per_device_train_batch_size", "in vlmft, micro_batch_size"),
        ("per_device_eval_batch_size", "in vlmft, eval_batch_size"),
        ("output_dir", "in vlmft, out"),
        ("num_train_epochs", "in vlmft, num_epochs"),
        ("gradient_accumulation_steps", "in vlmft, global_batch_size"),
        ("lora_target", "in vlmft, lora_projections"),
        ("cutoff_len", "in vlmft, max_length"),
        ("bf16", "in vlmft, precision: bf16"),
        ("lr_scheduler_type", "in vlmft, lr_scheduler"),
        ("save_total_limit", "in vlmft, keep_last"),
        ("model_name_or_path", "in vlmft, model"),
    ],
)
def test_an_unknown_config_key_names_what_vlmft_calls_it(tmp_path, key, named):
    config = write(tmp_path / "c.yaml", f"{key}: 1\n")
    message = refused(config_file=config)
    assert message.startswith(f"unknown setting {key!r} in config file {config}") and named in message


def test_an_unknown_key_with_nothing_close_points_at_the_list(tmp_path):
    message = refused(config_file=write(tmp_path / "c.yaml", "zebra_crossing: 1\n"))
    assert "unknown setting 'zebra_crossing'" in message and "vlmft profiles show" in message


def test_llama_factory_stage_is_explained(tmp_path):
    message = refused(config_file=write(tmp_path / "c.yaml", "stage: sft\n"))
    assert "stage must be 1 or 2, got 'sft'" in message and "LLaMA-Factory" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("learning_rate: 1.0e-4\nlora_r: 8\nmax_frames: [4,\n", 4),  # the flow sequence never closes
        ("learning_rate: 1.0e-4\n lora_r: 8\n", 2),
        ("a: 1\nb: 2\nc: 3\nd: e: f\n", 4),
        ('model: "unterminated\n', 2),
    ],
)
def test_a_config_file_that_does_not_parse_names_the_line(tmp_path, text, line):
    config = write(tmp_path / "broken.yaml", text)
    message = refused(config_file=config)
    assert f"config file {config} is not valid YAML: line {line}, column" in message


def test_a_config_path_that_is_a_folder_is_one_line(tmp_path):
    assert f"cannot read config file {tmp_path}" in refused(config_file=tmp_path)

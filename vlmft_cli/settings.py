"""The one settings model and its one precedence order.

Every value a run uses comes from exactly one of these layers, later ones winning:

    stage defaults (the reference recipe) < profile < recipe < config file < VLMFT_* environment < command line

(a recipe, `--recipe`, is a named config file: `vlmft_cli.recipes`).

`resolve_settings` merges them, remembers where each value came from, and validates the result; an
invalid value fails with a `ConfigError` naming the key and its source.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from vlmft_cli.errors import ConfigError, VlmftWarning
from vlmft_cli.profiles import Profile, load_profile, yaml_error_text

Stage = Literal[1, 2]

SOURCE_DEFAULT = "default"
SOURCE_STAGE = "stage {stage} default"
SOURCE_ENV = "environment"
SOURCE_CLI = "command line"

DEFAULT_PROFILE = "cpu"


class SettingEnum(str, Enum):
    """A choice among fixed strings: compares equal to its value and prints as it."""

    def __str__(self) -> str:
        return str(self.value)


class Precision(SettingEnum):
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class Quantization(SettingEnum):
    NONE = "none"
    NF4 = "4bit"
    INT8 = "8bit"


class PackMode(SettingEnum):
    NONE = "none"
    SHARED_PREFIX = "shared-prefix"


class Checkpointing(SettingEnum):
    """Gradient checkpointing: `auto` is made on or off by the plan phase from the memory estimate
    (`vlmft_cli.training.dry_run.resolve_checkpointing`)."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


#: What older configs and stored runs hold (a bool, or pydantic's bool words from the environment).
_CHECKPOINTING_WORDS = {"true": "on", "1": "on", "yes": "on", "y": "on", "t": "on", "false": "off", "0": "off", "no": "off", "n": "off", "f": "off"}


class LrScheduler(SettingEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"


class FrameSampling(SettingEnum):
    UNIFORM_LAST = "uniform-last"
    LAST = "last"


class Group(SettingEnum):
    """Where a setting shows in `vlmft train --help`."""

    WHAT = "What to train"
    RECIPE = "Hyperparameters (defaults: the stage's reference recipe)"
    HARDWARE = "Hardware (defaults: the profile)"
    CADENCE = "Checkpoints and evaluation"


class OnResume(SettingEnum):
    """What a resume does when a setting differs from the run's (see `vlmft_cli.training.reconcile`)."""

    APPLY = "apply"  # safe to change: applied and listed
    REFUSE = "refuse"  # would make it a different run: refused unless --force-new-settings
    LOCATE = "locate"  # where things are, not what is trained: the run's own location wins unless given


def setting(default: Any = ..., description: str = "", *, group: Group, on_resume: OnResume, flag: str | None = None, **constraints: Any) -> Any:
    """A settings field with what the CLI and the resume reconcile need to know about it: its help panel,
    its flag name (default `--field-name`) and whether a resume may change it."""
    extra = {"group": group.value, "on_resume": on_resume.value, "flag": flag}
    if callable(default) and not isinstance(default, type):
        return Field(default_factory=default, description=description, json_schema_extra=extra, **constraints)
    return Field(default, description=description, json_schema_extra=extra, **constraints)


def _default_home() -> Path:
    return Path("~/.cache/vlmft").expanduser()


def _default_projections() -> list[str]:
    return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


W, R, H, C = Group.WHAT, Group.RECIPE, Group.HARDWARE, Group.CADENCE
APPLY, REFUSE, LOCATE = OnResume.APPLY, OnResume.REFUSE, OnResume.LOCATE


class Settings(BaseSettings):
    """Everything a run is configured by. Field descriptions are shown by `vlmft profiles show` and
    `vlmft train --help`."""

    # allow_inf_nan=False: every float setting is finite (`--lr inf`, `num_epochs: .inf` are refused).
    model_config = SettingsConfigDict(env_prefix="VLMFT_", extra="forbid", validate_default=True, use_enum_values=True, allow_inf_nan=False)

    # Where things live
    home: Path = setting(_default_home, "Cache folder for tiny models and downloads (VLMFT_HOME).", group=W, on_resume=LOCATE)
    out: Path = setting(Path("experiments"), "Experiments folder: runs, checkpoints, logs.", group=W, on_resume=LOCATE, flag="--out")

    # What to train
    stage: Stage = setting(1, "Curriculum stage: 1 = one QA per sample, 2 = whole conversations.", group=W, on_resume=REFUSE, flag="--stage")
    data: Path | None = setting(None, "Processed data folder (what `vlmft data extract` wrote).", group=W, on_resume=LOCATE, flag="--data")
    max_bad_samples: int = setting(10, "Training samples whose frames do not decode (empty, not an image, truncated, too large) skipped and counted before the run stops with a checkpoint.", group=W, on_resume=APPLY, ge=0)
    model: str = setting("tiny-internvl3", "Model name, hub id or local path.", group=W, on_resume=REFUSE, flag="--model")
    backend: str | None = setting(None, "Model backend plugin; by default the one that recognises the model.", group=W, on_resume=REFUSE)
    experiment: str | None = setting(None, "Experiment name (runs are {experiment}_{timestamp}); default stage{N}.", group=W, on_resume=APPLY, flag="--experiment")
    profile: str = setting(DEFAULT_PROFILE, "Hardware profile name or path to a profile file.", group=W, on_resume=APPLY, flag="--profile")
    seed: int = setting(42, "Random seed for data order, LoRA init and dropout.", group=R, on_resume=REFUSE, ge=0, lt=2**32)

    # Hardware-dependent (profiles set these)
    precision: Precision = setting(Precision.BF16, "Weights and compute dtype.", group=H, on_resume=REFUSE)
    attention: str = setting("sdpa", "Attention backend (see `vlmft plugins list`).", group=H, on_resume=APPLY)
    quantization: Quantization = setting(Quantization.NONE, "bitsandbytes quantization of the base model (4bit = QLoRA NF4).", group=H, on_resume=REFUSE, flag="--quantize")
    gradient_checkpointing: Checkpointing = setting(
        Checkpointing.AUTO,
        "Recompute activations in backward to save memory: 'auto' = on only when the memory estimate of a "
        "micro-batch without it exceeds the memory cap (the dry run shows the choice and why); true/false "
        "from older configs mean on/off.",
        group=H,
        on_resume=APPLY,
    )
    memory_cap_gb: float | None = setting(None, "Hard memory cap for the process, in GB.", group=H, on_resume=APPLY, gt=0)
    micro_batch_size: int = setting(2, "Samples per forward/backward on one device (accumulation keeps the global batch).", group=H, on_resume=APPLY, ge=1)
    eval_batch_size: int = setting(2, "Samples per evaluation forward on one device.", group=H, on_resume=APPLY, ge=1)
    dataloader_workers: int = setting(4, "Dataloader worker processes.", group=H, on_resume=APPLY, flag="--workers", ge=0)

    # The recipe (stage defaults from the reference run)
    global_batch_size: int = setting(32, "Samples (QAs in stage 1) per optimizer step over all devices; accumulation follows.", group=R, on_resume=REFUSE, ge=1)
    learning_rate: float = setting(4e-5, "Peak learning rate (4e-5 stage 1, 2e-5 stage 2).", group=R, on_resume=REFUSE, flag="--lr", gt=0, le=1)
    num_epochs: float = setting(1.0, "Passes over the training data.", group=R, on_resume=APPLY, flag="--epochs", gt=0)
    max_steps: int | None = setting(None, "Stop after this many optimizer steps (overrides epochs).", group=R, on_resume=APPLY, ge=1)
    weight_decay: float = setting(0.01, "AdamW weight decay.", group=R, on_resume=REFUSE, ge=0)
    adam_beta1: float = setting(0.9, "AdamW beta1.", group=R, on_resume=REFUSE, gt=0, lt=1)
    adam_beta2: float = setting(0.999, "AdamW beta2.", group=R, on_resume=REFUSE, gt=0, lt=1)
    lr_scheduler: LrScheduler = setting(LrScheduler.COSINE, "Learning-rate schedule.", group=R, on_resume=REFUSE)
    warmup_ratio: float = setting(0.03, "Share of steps spent warming up.", group=R, on_resume=REFUSE, ge=0, lt=1)
    max_grad_norm: float = setting(1.0, "Gradient clipping norm.", group=R, on_resume=REFUSE, gt=0)
    lora_r: int = setting(128, "LoRA rank.", group=R, on_resume=REFUSE, ge=1)
    lora_alpha: int = setting(256, "LoRA alpha.", group=R, on_resume=REFUSE, ge=1)
    lora_dropout: float = setting(0.05, "LoRA dropout.", group=R, on_resume=REFUSE, ge=0, lt=1)
    lora_projections: list[str] = setting(_default_projections, "Language-model projections that get LoRA adapters.", group=R, on_resume=REFUSE)
    lora_pattern: str | None = setting(None, "Regex over module names; replaces the backend's language-model pattern.", group=R, on_resume=REFUSE)
    fps: float | None = setting(None, "Frame rate of the source clips; sampled frames are timed from it (default: the backend's).", group=R, on_resume=REFUSE, gt=0)
    max_frames: int = setting(4, "Frames per sample (4 stage 1, 10 stage 2), sampled evenly and always including the final frame.", group=R, on_resume=REFUSE, ge=1)
    frame_sampling: FrameSampling = setting(FrameSampling.UNIFORM_LAST, "How frames are picked from the clip.", group=R, on_resume=REFUSE)
    system_prompt: str | None = setting(
        None,
        "System turn of every sample in training, evaluation and generation: 'none' = no system turn, 'official' = "
        "the model backend's official fine-tuning one (InternVL3: InternVL's internvl2_5 system message), any other "
        "text = that text. Default: what the model's chat template writes (Qwen2.5-VL: 'You are a helpful "
        "assistant.'; InternVL3 -hf and Qwen3-VL: none).",
        group=R,
        on_resume=REFUSE,
        min_length=1,
    )
    max_length: int = setting(2048, "Longest sequence in tokens (2048 stage 1, 4096 stage 2); frames are never truncated.", group=R, on_resume=REFUSE, ge=16)
    subset_ratio: float = setting(1.0, "Share of the training videos to use (deterministic by seed).", group=R, on_resume=REFUSE, gt=0, le=1)
    pack: PackMode = setting(
        PackMode.NONE,
        "Stage 1: 'shared-prefix' trains all QAs of a video in one sequence (frames once, each QA seeing the "
        "frames and itself only: the same objective at about a third of the tokens); 'none' = one QA per sample.",
        group=R,
        on_resume=REFUSE,
    )

    # Cadence
    save_steps: int | None = setting(None, "Checkpoint every N optimizer steps.", group=C, on_resume=APPLY, ge=1)
    save_every_hours: float | None = setting(None, "Checkpoint about every H hours (default 1), turned into steps from the measured step time.", group=C, on_resume=APPLY, gt=0)
    eval_steps: int | None = setting(None, "Evaluate every N optimizer steps (default: at every checkpoint).", group=C, on_resume=APPLY, ge=1)
    eval_limit: int | None = setting(
        None,
        "Evaluate at most N val QAs per task type at checkpoints (a fixed subset chosen by the seed, the same at "
        "every checkpoint); the final evaluation always covers the whole split. Default: the whole split every time.",
        group=C,
        on_resume=APPLY,
        ge=1,
    )
    keep_last: int = setting(3, "Checkpoints kept besides the best one.", group=C, on_resume=APPLY, ge=1)
    logging_steps: int = setting(1, "Log metrics every N optimizer steps.", group=C, on_resume=APPLY, ge=1)
    report_to: str = setting(
        "none",
        "Extra metrics loggers besides the CSV files (always written), comma-separated, as transformers names them: "
        "tensorboard, wandb, mlflow, comet_ml, clearml, trackio, …; 'none' for the CSV files only.",
        group=C,
        on_resume=APPLY,
    )

    @field_validator("home", "out")
    @classmethod
    def _usable_folder(cls, value: Path) -> Path:
        problem = folder_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _checkpointing_from_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return Checkpointing.ON.value if value else Checkpointing.OFF.value
        if isinstance(value, str):
            return _CHECKPOINTING_WORDS.get(value.strip().lower(), value.strip().lower())
        return value

    @field_validator("report_to")
    @classmethod
    def _logger_names(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        if not names or any(not re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names):
            raise ValueError("expected 'none' or comma-separated logger names such as tensorboard,wandb")
        if "none" in names and len(names) > 1:
            raise ValueError("'none' cannot be combined with other loggers")
        return ",".join(names)

    @field_validator("lora_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("lora_projections")
    @classmethod
    def _projection_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"not a module name: {name!r}")
        return value

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Settings:
        if self.save_steps is not None and self.save_every_hours is not None:
            raise ValueError("set save_steps or save_every_hours, not both")
        if not self.lora_projections and not self.lora_pattern:
            raise ValueError("lora_projections is empty and no lora_pattern is set: LoRA would adapt nothing")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # Layering (and the environment) is done by `resolve_settings`, which also records sources.
        return (init_settings,)

    def gradient_accumulation_steps(self, world_size: int = 1) -> int:
        """Accumulation that keeps `global_batch_size` for this micro-batch and world size."""
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size} × {world_size} device(s)"
            )
        return self.global_batch_size // per_step


#: The reference recipe's per-stage values (ROBOVQA.md), and stage 1's packing; everything else uses the
#: field defaults.
STAGE_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {"learning_rate": 4e-5, "max_frames": 4, "max_length": 2048, "pack": "shared-prefix"},
    2: {"learning_rate": 2e-5, "max_frames": 10, "max_length": 4096, "pack": "none"},
}

def field_extra(name: str) -> dict[str, Any]:
    """The `setting(...)` metadata of a field: group, on_resume, flag."""
    extra = Settings.model_fields[name].json_schema_extra
    return extra if isinstance(extra, dict) else {}


#: Keys a profile may set (the hardware-dependent ones); the rest belong to the recipe.
PROFILE_KEYS = frozenset(name for name in Settings.model_fields if field_extra(name).get("group") == Group.HARDWARE.value)


def folder_problem(path: Path) -> str | None:
    """Why `path` cannot be a folder vlmft creates and writes in (`home`, `out`), or None.

    Only what is certain without writing: the path, or a folder on the way to it, exists and is not a
    folder (`/dev/null`, `/etc/hostname/x`). Whether a folder can be created there shows when it is."""
    try:
        candidate = path.expanduser()
    except RuntimeError as exc:  # "~user" for a user that does not exist
        return str(exc)
    for step in (candidate, *candidate.parents):
        try:
            if step.is_dir():
                return None
            if step.exists():
                return f"{step} exists and is not a folder" if step == candidate else f"{step} is not a folder, so {candidate} cannot be made"
        except OSError:  # not allowed to look: the folder's creation will say
            return None
    return None


#: `VLMFT_*` variables vlmft reads that are not settings (not warned about as unknown).
OTHER_VARIABLES = frozenset({"VLMFT_DEBUG", "VLMFT_CONFIG_DIR", "VLMFT_LOAD_PLUGINS"})

#: Names users bring from LLaMA-Factory, ms-swift and transformers' TrainingArguments: the vlmft setting
#: that means the same (None where there is none) and how to say it here.
FOREIGN_KEYS: dict[str, tuple[str | None, str]] = {
    "lora_rank": ("lora_r", "lora_r"),
    "lora_target": ("lora_projections", "lora_projections (a list of projection names; lora_pattern for a regex)"),
    "target_modules": ("lora_projections", "lora_projections (a list of projection names; lora_pattern for a regex)"),
    "per_device_train_batch_size": ("micro_batch_size", "micro_batch_size"),
    "per_device_eval_batch_size": ("eval_batch_size", "eval_batch_size"),
    "gradient_accumulation_steps": ("global_batch_size", "global_batch_size (accumulation follows: global_batch_size ÷ (micro_batch_size × devices))"),
    "output_dir": ("out", "out"),
    "num_train_epochs": ("num_epochs", "num_epochs"),
    "cutoff_len": ("max_length", "max_length"),
    "model_max_length": ("max_length", "max_length"),
    "bf16": ("precision", "precision: bf16"),
    "fp16": ("precision", "precision: fp16"),
    "torch_dtype": ("precision", "precision (bf16, fp16 or fp32)"),
    "lr_scheduler_type": ("lr_scheduler", "lr_scheduler"),
    "warmup_steps": ("warmup_ratio", "warmup_ratio (a share of the optimizer steps)"),
    "save_total_limit": ("keep_last", "keep_last"),
    "model_name_or_path": ("model", "model"),
    "model_id_or_path": ("model", "model"),
    "dataset": ("data", "data (a folder `vlmft data extract` wrote)"),
    "dataset_dir": ("data", "data (a folder `vlmft data extract` wrote)"),
    "dataloader_num_workers": ("dataloader_workers", "dataloader_workers"),
    "quantization_bit": ("quantization", "quantization (4bit or 8bit)"),
    "flash_attn": ("attention", "attention (see `vlmft plugins list`)"),
    "attn_impl": ("attention", "attention (see `vlmft plugins list`)"),
    "attn_implementation": ("attention", "attention (see `vlmft plugins list`)"),
    "video_maxlen": ("max_frames", "max_frames"),
    "video_fps": ("fps", "fps"),
    "max_samples": ("subset_ratio", "subset_ratio (a share of the training videos, not a count)"),
    "finetuning_type": (None, "nothing: vlmft trains LoRA adapters only (QLoRA with quantization: 4bit)"),
    "train_type": (None, "nothing: vlmft trains LoRA adapters only (QLoRA with quantization: 4bit)"),
    "deepspeed": (None, "nothing: vlmft trains data-parallel through torchrun (vlmft train --nproc N)"),
}


def _setting_for(name: str) -> tuple[str | None, str] | None:
    """The setting an unknown name most likely means, and how to say so: a flag's name (`lr` for `--lr`),
    another tool's name (`lora_rank`), or a close spelling (difflib)."""
    name = name.lower().replace("-", "_")
    for field_name in Settings.model_fields:
        flag = field_extra(field_name).get("flag")
        if flag and flag.removeprefix("--").replace("-", "_") == name and field_name != name:
            return field_name, f"; {flag} is the command-line flag of {field_name!r}, which is its name everywhere else"
    if name in FOREIGN_KEYS:
        target, said = FOREIGN_KEYS[name]
        return target, f"; that is LLaMA-Factory, ms-swift or transformers naming: in vlmft, {said}"
    close = difflib.get_close_matches(name, list(Settings.model_fields), n=1, cutoff=0.75)
    return (close[0], f"; did you mean {close[0]!r}?") if close else None


def unknown_key_hint(key: str) -> str:
    """The tail of an unknown-setting message: what vlmft calls it, or where the settings are listed."""
    found = _setting_for(key)
    return found[1] if found else " (`vlmft profiles show cpu` lists every setting)"


def unknown_environment_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each `VLMFT_*` variable that is neither a setting nor one vlmft reads otherwise,
    naming the setting it most likely means."""
    settings = {f"VLMFT_{name.upper()}" for name in Settings.model_fields}
    messages = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith("VLMFT_") or upper in settings or upper in OTHER_VARIABLES:
            continue
        found = _setting_for(upper.removeprefix("VLMFT_"))
        guess = f"; did you mean VLMFT_{found[0].upper()}?" if found and found[0] else ""
        messages.append(f"{variable} is not a vlmft setting and is ignored{guess}")
    return messages


@dataclass
class ResolvedSettings:
    """Validated settings, the profile they used, and where each value came from."""

    settings: Settings
    profile: Profile
    sources: dict[str, str] = field(default_factory=dict)

    def described(self) -> list[dict[str, Any]]:
        """Rows of key, value, source and description, in field order (for `show` and `config.yaml`)."""
        values = self.settings.model_dump(mode="json")
        return [
            {"key": name, "value": values[name], "source": self.sources.get(name, SOURCE_DEFAULT), "description": info.description or ""}
            for name, info in Settings.model_fields.items()
        ]

    def document(self) -> str:
        """config.yaml: the effective settings, then where each came from."""
        rows = self.described()
        settings = {row["key"]: row["value"] for row in rows}
        sources = {row["key"]: row["source"] for row in rows}
        return yaml.safe_dump({"settings": settings, "sources": sources}, sort_keys=False)


@dataclass(frozen=True)
class StoredSettings:
    """A run's settings as its config.yaml holds them: the lowest layer when the run is resumed."""

    values: dict[str, Any]
    sources: dict[str, str]
    origin: str  # "run NAME"


def load_stored_settings(path: Path, origin: str) -> StoredSettings:
    """The settings a run stored in `path` (config.yaml); a `ConfigError` naming the file if unreadable."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        values, sources = document["settings"], document.get("sources") or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read the settings of {origin} from {path}: {yaml_error_text(exc)}") from None
    except (OSError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the settings of {origin} from {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(values, dict) or not isinstance(sources, dict):
        raise ConfigError(f"{path} does not hold a settings mapping")
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"{path} holds {unknown[0]!r}, which is not a setting of this vlmft version")
    return StoredSettings(values=values, sources={k: str(v) for k, v in sources.items()}, origin=origin)


@dataclass(frozen=True)
class SettingsInput:
    """What a command was given: the layers above the stage defaults (the environment is read when resolving)."""

    stage: int | None = None
    profile: str | Path | None = None
    config_file: Path | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)  # settings given on the command line (None = not given)
    environ: Mapping[str, str] | None = None  # default: os.environ
    recipe: str | None = None  # a recipe name or path (`vlmft_cli.recipes`)

    def resolve(self, stored: StoredSettings | None = None) -> ResolvedSettings:
        return resolve_settings(
            stage=self.stage, profile=self.profile, config_file=self.config_file, cli=self.flags, environ=self.environ, stored=stored, recipe=self.recipe
        )


def load_config_file(path: Path) -> dict[str, Any]:
    """A YAML config file of settings keys; unknown keys are caught at validation, naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_error_text(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def environment_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`VLMFT_*` variables that name settings, parsed by pydantic-settings (lists as JSON). Other `VLMFT_*`
    variables are ignored here; `unknown_environment_variables` says which of them look like a misspelt
    setting."""
    source = EnvSettingsSource(Settings, case_sensitive=False, env_prefix="VLMFT_")
    if environ is not None:
        source.env_vars = {k.lower(): v for k, v in environ.items()}
    return {k: v for k, v in source().items() if k in Settings.model_fields}


def resolve_settings(
    *,
    stage: int | None = None,
    profile: str | Path | None = None,
    config_file: Path | None = None,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    stored: StoredSettings | None = None,
    over_stored: tuple[Mapping[str, Any], str] | None = None,
    recipe: str | None = None,
) -> ResolvedSettings:
    """Merge the layers in precedence order, recording each value's source, and validate.

    A new run: stage defaults < profile < recipe < config file < environment < command line. A resumed run:
    its `stored` settings take the place of the stage defaults and the profile (a profile given now is
    applied over them), and the same upper layers follow. `over_stored` is one more layer right above
    the stored one (evaluation on the other stage's data takes that stage's input defaults there).
    """
    cli_values = {k: v for k, v in (cli or {}).items() if v is not None}
    if stage is not None:
        cli_values["stage"] = stage
    if profile is not None:
        cli_values["profile"] = str(profile)
    environ = environ if environ is not None else os.environ
    try:
        env = environment_values(environ)
    except Exception as exc:  # pydantic-settings raises SettingsError on unparsable JSON values
        raise ConfigError(f"invalid VLMFT_* environment variable: {' '.join(str(exc).split())}") from None
    for message in unknown_environment_variables(environ):
        warnings.warn(message, VlmftWarning, stacklevel=2)
    file_values = load_config_file(config_file) if config_file else {}
    file_source = f"config file {config_file}"
    upper: list[tuple[Mapping[str, Any], str]] = [(file_values, file_source), (env, SOURCE_ENV), (cli_values, SOURCE_CLI)]
    if recipe is not None:
        from vlmft_cli.recipes import load_recipe

        the_recipe = load_recipe(recipe)
        upper.insert(0, (the_recipe.settings, the_recipe.source))

    # Stage and profile choose which lower layers apply, so they are resolved first, by the same order.
    def pick(key: str) -> tuple[Any, str | None]:
        for values, source in reversed(upper):
            if key in values:
                return values[key], source
        return None, None

    stage_value, stage_source = pick("stage")
    profile_value, profile_source = pick("profile")
    if stored is not None:
        lower = _stored_layers(stored, profile_value)
        stage_value = stored.values.get("stage") if stage_value is None else stage_value
        lower += [over_stored] if over_stored else []
    else:
        lower = []
    stage_value = _stage(stage_value, stage_source)
    profile_name = str(profile_value or (stored.values.get("profile") if stored else None) or DEFAULT_PROFILE)
    the_profile = load_profile(profile_name)
    if stored is None:
        lower = [
            (STAGE_DEFAULTS[stage_value], SOURCE_STAGE.format(stage=stage_value)),
            (_profile_values(the_profile, stage_value), f"profile {the_profile.name} ({the_profile.path})"),
        ]

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for values, source in [*lower, *upper]:
        for key, value in values.items():
            if key not in Settings.model_fields:
                where = source if isinstance(source, str) else stored.origin if stored else "the settings"
                raise ConfigError(f"unknown setting {key!r} in {where}{unknown_key_hint(str(key))}")
            merged[key] = value
            sources[key] = source if isinstance(source, str) else source[key]
    merged["stage"] = stage_value
    merged["profile"] = profile_name
    sources["stage"] = stage_source or (sources.get("stage") if stored else None) or SOURCE_DEFAULT
    sources["profile"] = profile_source or (sources.get("profile") if stored else None) or SOURCE_DEFAULT

    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise _config_error(exc, sources) from None
    return ResolvedSettings(settings=settings, profile=the_profile, sources=sources)


def _stage(value: Any, source: str | None) -> int:
    value = 1 if value is None else value
    if str(value) not in ("1", "2"):
        other = " (LLaMA-Factory's stage is the training method; vlmft's is the curriculum stage and trains LoRA SFT)" if str(value).lower() in ("pt", "sft", "rm", "ppo", "dpo", "kto") else ""
        raise ConfigError(f"stage must be 1 or 2, got {value!r} from {source or SOURCE_CLI}{other}")
    return int(value)


def _profile_values(profile: Profile, stage: int) -> dict[str, Any]:
    values = profile.values_for_stage(stage)
    unknown = sorted(set(values) - PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"profile {profile.name} ({profile.path}) sets {unknown[0]!r}, which is not a hardware setting")
    return values


def _stored_layers(stored: StoredSettings, new_profile: Any) -> list[tuple[Mapping[str, Any], Any]]:
    """The run's own settings (each with its original source), then a profile given now over them."""
    stored_sources = {key: f"{stored.origin} ({stored.sources.get(key, SOURCE_DEFAULT)})" for key in stored.values}
    layers: list[tuple[Mapping[str, Any], Any]] = [(stored.values, stored_sources)]
    if new_profile is not None and str(new_profile) != stored.values.get("profile"):
        profile = load_profile(str(new_profile))
        stage = _stage(stored.values.get("stage"), stored.origin)
        layers.append((_profile_values(profile, stage), f"profile {profile.name} ({profile.path})"))
    return layers


def _config_error(exc: ValidationError, sources: Mapping[str, str]) -> ConfigError:
    first = exc.errors()[0]
    message = " ".join(str(first["msg"]).removeprefix("Value error, ").split())
    if not first["loc"]:  # a check across settings: name where each one it mentions came from
        named = [name for name in Settings.model_fields if re.search(rf"\b{name}\b", message)]
        where = ", ".join(f"{name} from {_source_text(name, sources)}" for name in named)
        return ConfigError(f"invalid settings: {message}" + (f" ({where})" if where else ""))
    key = str(first["loc"][0])
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f"={value!r}"
    return ConfigError(f"invalid setting {key}{shown} from {_source_text(key, sources)}: {message}")


def _source_text(key: str, sources: Mapping[str, str]) -> str:
    source = sources.get(key, SOURCE_DEFAULT)
    return f"{SOURCE_ENV} (VLMFT_{key.upper()})" if source == SOURCE_ENV else source

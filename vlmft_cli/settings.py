"""The one settings model and its one precedence order.

Every value a run uses comes from exactly one of these layers, later ones winning:

    stage defaults (the reference recipe) < profile < config file < VLMFT_* environment < command line

`resolve_settings` merges them, remembers where each value came from, and validates the result; an
invalid value fails with a `ConfigError` naming the key and its source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from vlmft_cli.errors import ConfigError
from vlmft_cli.profiles import Profile, load_profile

Stage = Literal[1, 2]

SOURCE_DEFAULT = "default"
SOURCE_STAGE = "stage {stage} default"
SOURCE_ENV = "environment"
SOURCE_CLI = "command line"

DEFAULT_PROFILE = "cpu"


def _default_home() -> Path:
    return Path("~/.cache/vlmft").expanduser()


class Settings(BaseSettings):
    """Everything a run is configured by. Field descriptions are shown by `vlmft profiles show`."""

    model_config = SettingsConfigDict(env_prefix="VLMFT_", extra="forbid", validate_default=True)

    # Where things live
    home: Path = Field(default_factory=_default_home, description="Cache folder for tiny models and downloads (VLMFT_HOME).")
    out: Path = Field(Path("experiments"), description="Experiments folder: runs, checkpoints, logs.")

    # What to train
    stage: Stage = Field(1, description="Curriculum stage: 1 = one QA per sample, 2 = whole conversations.")
    data: Path | None = Field(None, description="Processed data folder (what `vlmft data extract` wrote).")
    model: str = Field("tiny-internvl3", description="Model name, hub id or local path.")
    backend: str | None = Field(None, description="Model backend plugin; by default the one that recognises the model.")
    experiment: str | None = Field(None, description="Experiment name (runs are {experiment}_{timestamp}); default stage{N}.")
    profile: str = Field(DEFAULT_PROFILE, description="Hardware profile name or path to a profile file.")
    seed: int = Field(42, description="Random seed for data order, LoRA init and dropout.")

    # Hardware-dependent (profiles set these)
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Weights and compute dtype.")
    attention: str = Field("sdpa", description="Attention backend (see `vlmft plugins list`).")
    quantization: Literal["none", "4bit", "8bit"] = Field("none", description="bitsandbytes quantization of the base model (4bit = QLoRA NF4).")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward to save memory.")
    memory_cap_gb: float | None = Field(None, gt=0, description="Hard memory cap for the process, in GB.")
    micro_batch_size: int = Field(2, ge=1, description="Samples per forward/backward on one device.")
    eval_batch_size: int = Field(2, ge=1, description="Samples per evaluation forward on one device.")
    dataloader_workers: int = Field(4, ge=0, description="Dataloader worker processes.")

    # The recipe (stage defaults from the reference run)
    global_batch_size: int = Field(32, ge=1, description="Samples per optimizer step over all devices; accumulation follows.")
    learning_rate: float = Field(4e-5, gt=0, description="Peak learning rate.")
    num_epochs: float = Field(1.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    adam_beta1: float = Field(0.9, gt=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(0.999, gt=0, lt=1, description="AdamW beta2.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field("cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    lora_r: int = Field(128, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(256, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_projections: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Language-model projections that get LoRA adapters.",
    )
    lora_pattern: str | None = Field(None, description="Regex over module names; replaces the backend's language-model pattern.")
    fps: float | None = Field(None, gt=0, description="Frame rate of the source clips; sampled frames are timed from it (default: the backend's).")
    max_frames: int = Field(4, ge=1, description="Frames per sample, sampled evenly and always including the final frame.")
    frame_sampling: Literal["uniform-last", "last"] = Field("uniform-last", description="How frames are picked from the clip.")
    max_length: int = Field(2048, ge=16, description="Longest sequence in tokens; frames are never truncated.")
    subset_ratio: float = Field(1.0, gt=0, le=1, description="Share of the training data to use (deterministic by seed).")
    pack: Literal["none", "shared-prefix"] = Field(
        "none",
        description=(
            "Stage 1: 'shared-prefix' trains all QAs of a video in one sequence (frames once, each QA seeing the "
            "frames and itself only: the same objective at about a third of the tokens); 'none' = one QA per sample."
        ),
    )

    # Cadence
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N optimizer steps.")
    save_every_hours: float | None = Field(None, gt=0, description="Checkpoint about every H hours (turned into steps from the measured step time).")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N optimizer steps.")
    keep_last: int = Field(3, ge=1, description="Checkpoints kept besides the best one.")
    logging_steps: int = Field(1, ge=1, description="Log metrics every N optimizer steps.")
    report_to: Literal["none", "tensorboard"] = Field("none", description="Extra metrics logger besides the CSV files.")

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Settings:
        if self.save_steps is not None and self.save_every_hours is not None:
            raise ValueError("set save_steps or save_every_hours, not both")
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

#: Keys a profile may set (hardware-dependent ones); the rest belong to the recipe.
PROFILE_KEYS = frozenset(
    {
        "precision", "attention", "quantization", "gradient_checkpointing", "memory_cap_gb",
        "micro_batch_size", "eval_batch_size", "dataloader_workers",
    }
)  # fmt: skip


@dataclass
class ResolvedSettings:
    """Validated settings, the profile they used, and where each value came from."""

    settings: Settings
    profile: Profile
    sources: dict[str, str] = field(default_factory=dict)

    def described(self) -> list[dict[str, Any]]:
        """Rows of key, value, source and description, in field order (for `show` and `config.yaml`)."""
        rows = []
        for name, info in Settings.model_fields.items():
            value = getattr(self.settings, name)
            rows.append(
                {
                    "key": name,
                    "value": str(value) if isinstance(value, Path) else value,
                    "source": self.sources.get(name, SOURCE_DEFAULT),
                    "description": info.description or "",
                }
            )
        return rows


def load_config_file(path: Path) -> dict[str, Any]:
    """A YAML config file of settings keys; unknown keys are caught at validation, naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def environment_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`VLMFT_*` variables that name settings, parsed by pydantic-settings (lists as JSON)."""
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
) -> ResolvedSettings:
    """Merge the layers in precedence order, recording each value's source, and validate."""
    cli_values = {k: v for k, v in (cli or {}).items() if v is not None}
    if stage is not None:
        cli_values["stage"] = stage
    if profile is not None:
        cli_values["profile"] = str(profile)
    try:
        env = environment_values(environ if environ is not None else os.environ)
    except Exception as exc:  # pydantic-settings raises SettingsError on unparsable JSON values
        raise ConfigError(f"invalid VLMFT_* environment variable: {exc}") from None
    file_values = load_config_file(config_file) if config_file else {}
    file_source = f"config file {config_file}"

    # Stage and profile choose which lower layers apply, so they are resolved first, by the same order.
    def pick(key: str) -> tuple[Any, str | None]:
        for values, source in ((cli_values, SOURCE_CLI), (env, SOURCE_ENV), (file_values, file_source)):
            if key in values:
                return values[key], source
        return None, None

    stage_value, stage_source = pick("stage")
    stage_value = 1 if stage_value is None else stage_value
    if str(stage_value) not in ("1", "2"):
        raise ConfigError(f"stage must be 1 or 2, got {stage_value!r} from {stage_source or SOURCE_CLI}")
    stage_value = int(stage_value)
    profile_value, profile_source = pick("profile")
    the_profile = load_profile(str(profile_value or DEFAULT_PROFILE))

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    layers: list[tuple[Mapping[str, Any], str]] = [
        (STAGE_DEFAULTS[stage_value], SOURCE_STAGE.format(stage=stage_value)),
        (the_profile.values_for_stage(stage_value), f"profile {the_profile.name} ({the_profile.path})"),
        (file_values, file_source),
        (env, SOURCE_ENV),
        (cli_values, SOURCE_CLI),
    ]
    for values, source in layers:
        for key, value in values.items():
            if key not in Settings.model_fields:
                raise ConfigError(f"unknown setting {key!r} in {source}")
            merged[key] = value
            sources[key] = source
    merged["stage"] = stage_value
    merged["profile"] = str(profile_value or DEFAULT_PROFILE)
    sources["stage"] = stage_source or SOURCE_DEFAULT
    sources["profile"] = profile_source or SOURCE_DEFAULT

    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise _config_error(exc, sources) from None
    return ResolvedSettings(settings=settings, profile=the_profile, sources=sources)


def _config_error(exc: ValidationError, sources: Mapping[str, str]) -> ConfigError:
    first = exc.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else "settings"
    source = sources.get(key, SOURCE_DEFAULT)
    value = first.get("input")
    shown = f"={value!r}" if first["loc"] and not isinstance(value, dict) else ""
    return ConfigError(f"invalid setting {key}{shown} from {source}: {first['msg']}")

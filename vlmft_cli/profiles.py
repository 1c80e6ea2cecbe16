"""Hardware profiles: what they hold, and where they are found.

A profile is a YAML file with hardware facts (memory, unified or not, compute capability, peak bf16
TFLOP/s) and hardware-dependent settings, shared (`defaults`) and per stage (`stages`). `--profile`
takes a name or a path. Names are looked up, first match wins, in:

1. the user profile folder (`~/.config/vlmft/profiles/NAME.yaml`, see `vlmft_cli.paths`),
2. packages registered under the `vlmft.profiles` entry-point group (the built-ins are one of them).

Two distributions shipping the same name is an error naming both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vlmft_cli import plugins
from vlmft_cli.errors import ConfigError
from vlmft_cli.paths import user_profiles_dir

PROFILE_SUFFIXES = (".yaml", ".yml")


class HardwareFacts(BaseModel):
    """Facts about the machine, used for memory estimates and utilization figures."""

    model_config = ConfigDict(extra="forbid")

    device: Literal["cuda", "cpu", "mps"] = Field(description="Accelerator kind.")
    memory_gb: float = Field(gt=0, description="Memory the accelerator can use, in GB.")
    unified_memory: bool = Field(description="CPU and GPU share one memory (watch system memory too).")
    compute_capability: str | None = Field(None, description="CUDA compute capability, e.g. '12.1'.")
    peak_bf16_tflops: float | None = Field(None, gt=0, description="Datasheet dense bf16 TFLOP/s.")


class ProfileFile(BaseModel):
    """The schema of a profile file."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    hardware: HardwareFacts
    defaults: dict[str, Any] = Field(default_factory=dict)
    stages: dict[Literal[1, 2], dict[str, Any]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    name: str
    origin: str  # "built-in (vlmft 0.1.0)", "plugin mydist 1.0", "user folder …", "file …"
    path: str
    spec: ProfileFile

    @property
    def hardware(self) -> HardwareFacts:
        return self.spec.hardware

    def values_for_stage(self, stage: int) -> dict[str, Any]:
        """The settings this profile sets for a stage: its defaults, then the stage's own values (checked
        against the hardware settings by `vlmft_cli.settings`)."""
        return {**self.spec.defaults, **self.spec.stages.get(stage, {})}  # type: ignore[call-overload]


def yaml_error_text(exc: Exception) -> str:
    """Where and what a YAML parse error is, in one line: `line 3, column 7: mapping values are not allowed here`."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split()) or type(exc).__name__
    context = getattr(exc, "context", None)
    during = f" ({context})" if context and context != problem else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}{during}"


def parse_profile(text: str, *, name: str, origin: str, path: str) -> Profile:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile {path} is not valid YAML: {yaml_error_text(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"profile {path} must hold a mapping")
    try:
        spec = ProfileFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"invalid profile value {key} in {path}: {first['msg']}") from None
    return Profile(name=name, origin=origin, path=path, spec=spec)


def available_profiles() -> dict[str, plugins.PackagedFile]:
    """Every profile name and where it comes from (a user profile replaces a packaged one of its name)."""
    return plugins.named_files("profiles", PROFILE_SUFFIXES, user_profiles_dir(), "profile")


def load_profile(name_or_path: str) -> Profile:
    """A profile by name, or from a file when given a path."""
    try:
        as_path = Path(name_or_path).expanduser()
    except RuntimeError:  # "~user" for a user that does not exist
        raise ConfigError(f"profile file not found: {name_or_path!r}") from None
    if as_path.suffix in PROFILE_SUFFIXES or "/" in name_or_path or "\\" in name_or_path:
        if not as_path.is_file():
            raise ConfigError(f"profile file not found: {name_or_path!r}")
        return parse_profile(as_path.read_text(encoding="utf-8"), name=as_path.stem, origin=f"file {as_path}", path=str(as_path))
    candidates = available_profiles()
    candidate = candidates.get(name_or_path)
    if candidate is None:
        known = ", ".join(candidates) or "none"
        raise ConfigError(f"unknown profile {name_or_path!r} (known: {known})")
    return parse_profile(candidate.read(), name=candidate.name, origin=candidate.origin, path=candidate.path)

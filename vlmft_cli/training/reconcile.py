"""Reconciling a resumed run's stored settings with the ones given now, key by key.

Each setting says in the settings model what a resume may do with it (`OnResume`):

- `apply`: safe to change (max steps or epochs, save/eval cadence, keep-last, memory cap, logging,
  report-to, workers, micro-batch, attention, gradient checkpointing, the profile): applied and listed.
- `refuse`: it would make the run a different run (data, model, LoRA shape, learning rate, schedule,
  global batch, seed, frames, max length, pack mode…): refused with one line naming each and the way out,
  unless `--force-new-settings` accepts them knowingly (recorded in run.json).
- `locate`: where things are (`home`, `out`, `data`): a new place is applied; the data itself is
  checked by the sha256 of its files (`check_data`), refused the same way when it changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vlmft_cli.errors import ConfigError
from vlmft_cli.settings import OnResume, ResolvedSettings, Settings, StoredSettings, field_extra

FORCE_FLAG = "--force-new-settings"


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    source: str  # where the new value came from

    def describe(self) -> str:
        return f"{self.key} {_show(self.old)} → {_show(self.new)} ({self.source})"

    def as_pair(self) -> list[Any]:
        return [self.old, self.new]


@dataclass
class Reconciliation:
    """What a resume changes: applied (safe), forced (different-run keys accepted knowingly)."""

    applied: list[Change] = field(default_factory=list)
    forced: list[Change] = field(default_factory=list)
    data_digests: dict[str, str] = field(default_factory=dict)  # sha256 of the data files, by resolved path

    def lines(self) -> list[str]:
        out = [f"resume applies {change.describe()}" for change in self.applied]
        out += [f"resume accepts, with {FORCE_FLAG}, {change.describe()}: this is now a different run" for change in self.forced]
        return out


def _show(value: Any) -> str:
    return "unset" if value is None else repr(value) if isinstance(value, str) else str(value)


def comparable(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Settings values in their validated JSON form, so stored YAML and fresh values compare equal."""
    try:
        return Settings(**values).model_dump(mode="json")
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"the settings stored in {where} are no longer valid: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def reconcile(stored: StoredSettings, resolved: ResolvedSettings, *, step: int, force: bool, data_changes: list[Change] = ()) -> Reconciliation:
    """Compare key by key; raise a one-line `ConfigError` for refused changes unless `force`."""
    old = comparable(stored.values, stored.origin)
    new = resolved.settings.model_dump(mode="json")
    result = Reconciliation()
    refused: list[Change] = list(data_changes)
    for key in Settings.model_fields:
        if old.get(key) == new.get(key):
            continue
        change = Change(key, old.get(key), new.get(key), resolved.sources.get(key, "default"))
        rule = field_extra(key).get("on_resume")
        if rule == OnResume.REFUSE.value:
            refused.append(change)
        elif rule == OnResume.APPLY.value or key == "data":
            result.applied.append(change)
    if resolved.settings.max_steps is not None and resolved.settings.max_steps <= step:
        raise ConfigError(
            f"cannot resume {stored.origin} with max_steps {resolved.settings.max_steps}: its checkpoint is already at step {step}",
            hint="pass a larger --max-steps, or evaluate the run as it is",
        )
    if refused and not force:
        named = "; ".join(change.describe() for change in refused)
        raise ConfigError(
            f"resuming {stored.origin} would train a different run: {named}",
            hint=f"leave those out to continue the run as it started, pass {FORCE_FLAG} to accept them knowingly (recorded in run.json), or start a new run without --resume",
        )
    result.forced = refused
    return result


def check_data(recorded_files: dict[str, Any], data_dir: Path, stage: int) -> tuple[list[Change], dict[str, str]]:
    """The run's data files whose sha256 differs from what it recorded (a missing file counts too), looked
    up in `data_dir` (which may have moved since), and the digests computed (by resolved path), so the
    run record can be rewritten without hashing the files again."""
    from vlmft_cli.fsutil import sha256_file
    from vlmft_cli.pipeline.splits import stage_file

    changes, digests = [], {}
    for split, entry in sorted(recorded_files.items()):
        path = stage_file(data_dir, stage, split)
        if not path.is_file():
            changes.append(Change(f"data {split} file", entry.path, f"{path} (missing)", "data folder"))
            continue
        digest = digests[str(path.resolve())] = sha256_file(path)
        if digest != entry.sha256:
            changes.append(Change(f"data {split} sha256", entry.sha256[:12], f"{digest[:12]} ({path})", "data folder"))
    return changes, digests

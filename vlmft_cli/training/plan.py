"""The plan phase of a run: from resolved settings to what will be trained, before any model is loaded.

It picks the model and attention backends, decides the pack mode (the stage default may fall back; an
explicit choice, or a resumed run's, may not), reads and checks both splits with the length policy, and
works out the step plan: micro-batches per step for this world size and the optimizer steps to train.
A dry run stops here and shows it (`dry_run.describe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vlmft_cli.errors import ConfigError, DataError
from vlmft_cli.profiles import Profile
from vlmft_cli.reporting import Reporter
from vlmft_cli.settings import SOURCE_STAGE, PackMode, ResolvedSettings, Settings


@dataclass
class Plan:
    """Everything decided before the model loads."""

    resolved: ResolvedSettings
    backend: Any
    attention: Any
    processor: Any
    pack: str
    pack_dropped: str | None
    train_examples: list[Any]
    val_examples: list[Any]
    summaries: list[Any]  # pipeline.splits.DataSummary, train first
    packing: Any  # pipeline.packing.PackingData for stage 1, else None
    world: int = 1
    checkpointing: Any = None  # dry_run.CheckpointingChoice: `gradient_checkpointing` made on/off (set by plan_run)

    @property
    def settings(self) -> Settings:
        """The settings the run trains with: as resolved, with `gradient_checkpointing` on or off as decided
        (`resolved.settings` keeps what was asked, `auto` included, for config.yaml)."""
        settings = self.resolved.settings
        if self.checkpointing is not None and settings.gradient_checkpointing != self.checkpointing.value:
            return settings.model_copy(update={"gradient_checkpointing": self.checkpointing.value})
        return settings

    @property
    def profile(self) -> Profile:
        return self.resolved.profile

    @property
    def packed(self) -> bool:
        return self.pack == PackMode.SHARED_PREFIX.value

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step and device."""
        return accumulation_for(self.settings, self.pack, self.packing, self.world)

    @property
    def steps_per_epoch(self) -> int:
        # A stage-1 example is one QA and the global batch counts QAs; a stage-2 example is a conversation.
        return math.ceil(len(self.train_examples) / self.settings.global_batch_size)

    @property
    def optimizer_steps(self) -> int:
        return self.settings.max_steps or math.ceil(self.steps_per_epoch * self.settings.num_epochs)

    def pack_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"mode": self.pack, "accumulation": self.accumulation, "dropped": self.pack_dropped}
        if self.packed:
            record["mean_qas_per_video"] = round(self.packing.mean_qas_per_video, 4)
        return record


def accumulation_for(settings: Settings, pack: str, packing: Any, world: int = 1) -> int:
    """Micro-batches per optimizer step and device: `global_batch_size` QAs in packed sequences, or samples."""
    from vlmft_cli.pipeline.packing import packed_accumulation

    if pack == PackMode.SHARED_PREFIX.value:
        if settings.global_batch_size < world:
            raise ConfigError(f"global_batch_size {settings.global_batch_size} is smaller than the {world} devices")
        return packed_accumulation(settings.global_batch_size, settings.micro_batch_size, packing.mean_qas_per_video, world)
    return settings.gradient_accumulation_steps(world)


def plan_run(resolved: ResolvedSettings, reporter: Reporter, *, world: int = 1) -> Plan:
    """Backends, pack mode, both splits and the packing view; see the module docstring."""
    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.chat_pieces import apply_system_prompt
    from vlmft_cli.runtime import quiet_libraries
    from vlmft_cli.training.dry_run import resolve_checkpointing

    quiet_libraries()
    settings = resolved.settings
    if settings.data is None:
        raise ConfigError("no data folder: pass --data DIR (what `vlmft data extract` wrote)")
    backend = backend_for(settings.model, settings.backend)
    attention = select_attention(settings.attention, reporter, backend)
    processor = apply_system_prompt(backend, backend.load_processor(settings.model, settings.home), settings.system_prompt)
    resolved, pack, dropped = _decide_pack(resolved, backend, attention, reporter)
    train, val, summaries = _read_splits(resolved.settings, backend, processor, reporter)
    packing = _packing_data(resolved.settings, backend, processor, train)
    plan = Plan(resolved, backend, attention, processor, pack, dropped, train, val, summaries, packing, world)
    # `auto` made on or off from the memory estimate of the largest micro-batch; the dry run shows the
    # choice, and a run says it in the line it prints before the model loads.
    plan.checkpointing = resolve_checkpointing(plan)
    return plan


def _decide_pack(resolved: ResolvedSettings, backend: Any, attention: Any, reporter: Reporter) -> tuple[ResolvedSettings, str, str | None]:
    from vlmft_cli.training.pack_mode import resolve_pack

    settings = resolved.settings
    # Only the stage default may fall back; an explicit choice, or a resumed run's, must train as asked.
    explicit = resolved.sources.get("pack") != SOURCE_STAGE.format(stage=settings.stage)
    pack, dropped = resolve_pack(settings.pack, stage=settings.stage, backend=backend, attention=attention, explicit=explicit, reporter=reporter)
    if dropped:
        sources = {**resolved.sources, "pack": f"{resolved.sources['pack']}, dropped: {dropped}"}
        resolved = ResolvedSettings(settings.model_copy(update={"pack": pack}), resolved.profile, sources)
    return resolved, pack, dropped


def _read_splits(settings: Settings, backend: Any, processor: Any, reporter: Reporter) -> tuple[list[Any], list[Any], list[Any]]:
    from vlmft_cli.pipeline.splits import load_split

    train_examples, train_summary = load_split(settings, "train", backend, processor, reporter, required=True)  # type: ignore[misc]
    if not train_examples:
        raise DataError(f"no usable training examples in {train_summary.path}")
    loaded_val = load_split(settings, "val", backend, processor, reporter, required=False)
    val_examples, val_summary = loaded_val if loaded_val else ([], None)
    summaries = [train_summary, *([val_summary] if val_summary else [])]
    held = sum(examples.resident_bytes() for examples in (train_examples, val_examples) if hasattr(examples, "resident_bytes"))
    rss = resident_memory_bytes()
    reporter.info(
        f"plan: {len(train_examples):,} training and {len(val_examples):,} val examples "
        f"({', '.join(s.split + (' cached' if s.cached else ' read') for s in summaries)}), {held / 2**20:,.0f} MB held"
        + (f"; process resident {rss / 2**20:,.0f} MB" if rss else "")
    )
    return train_examples, val_examples, summaries


def resident_memory_bytes() -> int | None:
    """This process's resident memory now (Linux `/proc/self/statm`), or None where it cannot be read."""
    import os

    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _packing_data(settings: Settings, backend: Any, processor: Any, examples: list[Any]) -> Any:
    """The packing view of stage-1 training examples, or None where the backend cannot count a shared
    prefix or the stage does not pack."""
    from vlmft_cli.pipeline.packing import PackingData

    if settings.stage != 1 or not callable(getattr(backend, "packed_prefix_length", None)):
        return None
    return PackingData.for_backend(examples, backend, processor, settings.max_length)

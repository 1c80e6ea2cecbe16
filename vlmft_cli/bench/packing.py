"""`vlmft bench packing`: what stage-1 shared-prefix packing saves, measured.

Two figures from one run: tokens per stage-1 epoch packed against unpacked (the batch plan of epoch 0),
and training throughput in QAs per second for the same optimizer steps trained packed and unpacked,
alternating step by step on one model (median of the timed steps, each mode warmed up once). A step
covers everything training does for it: reading and encoding frames, collating, forward and backward of
every micro-batch, and the optimizer step.

The model is a mid-size random one derived from `model` (its tokenizer, image processor and
architecture family) with the text and vision sizes of `MID_SIZE` and 448-px frames, so a frame costs
256 tokens as in the real InternVL3 and frames dominate a stage-1 sample as they do in RoboVQA. It is
written once under `home/bench/`. The sizes are set through the Hugging Face `text_config` /
`vision_config` keys that InternVL-style configs carry; a Qwen VL config gets the same sizes under its own
names (`depth`, `num_heads`), its merger's width and mrope sections follow, and its frames are pinned by pixels.

The result is a benchmark document (`results`) with one entry keyed by the model and the batch sizes:
tokens and median QAs/s both ways and their ratios as metrics, every timed step's QAs/s in the details.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli.bench.device import device_info
from vlmft_cli.bench.results import BenchDocument, Entry
from vlmft_cli.errors import ConfigError, DataError
from vlmft_cli.reporting import NullReporter, Reporter

#: Overrides for the benchmark model, by sub-config; `image_size` also sets the image processor.
MID_SIZE: dict[str, dict[str, Any]] = {
    "text_config": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64},
    "vision_config": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 2, "image_size": [448, 448]},
}
#: Vision-config names of the `MID_SIZE` keys in families that spell them otherwise (Qwen VL).
VISION_ALIASES = {"num_hidden_layers": "depth", "num_attention_heads": "num_heads"}
#: Files of a model folder besides the weights and config that the benchmark model reuses.
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja", "generation_config.json", "preprocessor_config.json")
#: The token-count target of the issue: packed ≤ 0.4 × unpacked; and the throughput target: ≥ 2×.
TOKEN_TARGET = 0.4
SPEED_TARGET = 2.0


@dataclass
class PackingFigures:
    """What one packing benchmark measured (see `packing_document` for the document it becomes)."""

    model: str
    bench_model: str  # the folder of the random-weight benchmark model
    global_batch_size: int
    micro_batch_size: int
    packed_accumulation: int
    qas: int
    videos: int
    tokens_per_frame: int
    tokens_unpacked: int
    tokens_packed: int
    steps: int
    threads: int  # torch intra-op threads (OMP_NUM_THREADS): one is steadier on a shared machine
    packed_qas_per_s: list[float] = field(default_factory=list)
    unpacked_qas_per_s: list[float] = field(default_factory=list)

    @property
    def token_ratio(self) -> float:
        return self.tokens_packed / self.tokens_unpacked

    @property
    def median_packed(self) -> float:
        return statistics.median(self.packed_qas_per_s)

    @property
    def median_unpacked(self) -> float:
        return statistics.median(self.unpacked_qas_per_s)

    @property
    def speedup(self) -> float:
        return self.median_packed / self.median_unpacked


def packing_document(figures: PackingFigures, parameters: dict[str, Any]) -> BenchDocument:
    """The benchmark document of `figures`: one entry, keyed by the model and the batch sizes."""
    token_ratio, speedup = round(figures.token_ratio, 4), round(figures.speedup, 3)
    metrics: dict[str, float | None] = {
        "tokens_unpacked": figures.tokens_unpacked,
        "tokens_packed": figures.tokens_packed,
        "token_ratio": token_ratio,
        "median_unpacked_qas_per_s": round(figures.median_unpacked, 4),
        "median_packed_qas_per_s": round(figures.median_packed, 4),
        "speedup": speedup,
    }
    details = {
        "bench_model": figures.bench_model,
        "qas": figures.qas,
        "videos": figures.videos,
        "tokens_per_frame": figures.tokens_per_frame,
        "packed_accumulation": figures.packed_accumulation,
        "steps": figures.steps,
        "threads": figures.threads,
        "packed_qas_per_s": [round(value, 4) for value in figures.packed_qas_per_s],
        "unpacked_qas_per_s": [round(value, 4) for value in figures.unpacked_qas_per_s],
        "targets": {"token_ratio": TOKEN_TARGET, "speedup": SPEED_TARGET},
        "meets": {"token_ratio": token_ratio <= TOKEN_TARGET, "speedup": speedup >= SPEED_TARGET},
    }
    key = {"model": figures.model, "global_batch_size": figures.global_batch_size, "micro_batch_size": figures.micro_batch_size}
    notes = {
        "tokens": "tokens of one stage-1 epoch (the batch plan of epoch 0), packed one sequence per video and step against one QA per sample",
        "qas_per_s": "QAs per second of whole optimizer steps (frames read and encoded, collated, forward and backward, optimizer step), "
        "packed and unpacked alternating step by step on one model; median of the timed steps after one warm-up pair",
        "targets": f"tokens packed/unpacked ≤ {TOKEN_TARGET:g}; QAs/s packed/unpacked ≥ {SPEED_TARGET:g}×",
    }
    entry = Entry(key=key, metrics=metrics, details=details)
    return BenchDocument(bench="packing", device=device_info("cpu"), parameters=parameters, entries=[entry], notes=notes)


def scaled_config(config: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`config` (a config.json document) with sub-config overrides; the image token count follows the
    frame size where the config carries one (`(image_size / patch_size × downsample_ratio)²`)."""
    scaled = json.loads(json.dumps(config))
    for section, values in overrides.items():
        if section not in scaled:
            raise ConfigError(f"the benchmark model needs a {section} in the base model's config")
        scaled[section].update(values)
        if "num_hidden_layers" in values:
            scaled[section].pop("layer_types", None)  # per-layer lists of the old depth; rebuilt from the new one
        for key, alias in VISION_ALIASES.items():
            if section == "vision_config" and key in values and alias in scaled[section]:
                scaled[section][alias] = values[key]
    vision, text = scaled.get("vision_config", {}), scaled.get("text_config", {})
    if "out_hidden_size" in vision and "hidden_size" in text:
        vision["out_hidden_size"] = text["hidden_size"]  # the merger feeds the language model
    sections = (text.get("rope_parameters") or {}).get("mrope_section")
    if sections and "hidden_size" in text:
        half = int(text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]) // 2
        scaled_sections = [max(1, round(part * half / sum(sections))) for part in sections[:-1]]
        text["rope_parameters"]["mrope_section"] = [*scaled_sections, half - sum(scaled_sections)]
    if "image_seq_length" in scaled and "image_size" in vision:
        side = int(vision["image_size"][0]) // int(vision["patch_size"][0])
        scaled["image_seq_length"] = int(side * float(scaled.get("downsample_ratio", 1.0))) ** 2
    return scaled


def ensure_bench_model(source: Path, folder: Path, overrides: dict[str, dict[str, Any]] = MID_SIZE, seed: int = 0) -> Path:
    """A random-weight model of `source`'s family at the overridden sizes, written once into `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.utils import logging as progress_bars

    marker = folder / "vlmft_bench.json"
    spec = {"source": str(source), "overrides": overrides, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = scaled_config(json.loads((source / "config.json").read_text()), overrides)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in PROCESSOR_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    image_size = overrides.get("vision_config", {}).get("image_size")
    preprocessor = folder / "preprocessor_config.json"
    if image_size and preprocessor.is_file():
        document = json.loads(preprocessor.read_text())
        if "shortest_edge" in document.get("size", {}):  # Qwen VL: equal min and max pixels pin the frame size
            pixels = int(image_size[0]) * int(image_size[1])
            document["size"] = {"shortest_edge": pixels, "longest_edge": pixels}
        else:
            document["size"] = {"height": int(image_size[0]), "width": int(image_size[1])}
        preprocessor.write_text(json.dumps(document, indent=2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    progress_bars.disable_progress_bar()  # our reporter shows progress; the library's bar would interleave
    try:
        model.save_pretrained(str(folder))
    finally:
        progress_bars.enable_progress_bar()
    marker.write_text(json.dumps(spec))
    return folder


def _timed_step(model: Any, optimizer: Any, micro_batches: Sequence[dict[str, Any]], fetch: Any) -> float:
    """Seconds for one optimizer step: fetch and collate each micro-batch, forward/backward, step."""
    import torch

    from vlmft_cli.attention_masks import with_block_mask
    from vlmft_cli.label_loss import causal_lm_loss
    from vlmft_cli.model_backend import IGNORE_INDEX
    from vlmft_cli.pipeline.packed_dataset import STAT_KEYS

    start = time.perf_counter()
    batches = [fetch(items) for items in micro_batches]
    label_tokens = sum(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in batches)
    for batch in batches:
        inputs = with_block_mask({key: value for key, value in batch.items() if key not in STAT_KEYS})
        causal_lm_loss(model, inputs, torch.tensor(label_tokens)).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure_packing(
    data: Path,
    *,
    model: str = "tiny-internvl3",
    home: Path,
    steps: int = 3,
    global_batch_size: int = 8,
    micro_batch_size: int = 2,
    attention: str = "sdpa",
    seed: int = 0,
    size: dict[str, dict[str, Any]] = MID_SIZE,
    reporter: Reporter | None = None,
) -> BenchDocument:
    """Tokens per stage-1 epoch and training QAs/s, packed against unpacked, on the random model of `size`
    (the mid size by default), as a benchmark document."""
    import torch

    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.data.schema import iter_samples
    from vlmft_cli.lora_model import build_model
    from vlmft_cli.pipeline.dataset import Collator, ExampleDataset
    from vlmft_cli.pipeline.examples import build_examples
    from vlmft_cli.pipeline.packed_dataset import PackedCollator, PackedDataset
    from vlmft_cli.pipeline.packing import PackingData, packed_accumulation, packing_obstacle, plan_epoch, summarize
    from vlmft_cli.pipeline.splits import stage_file
    from vlmft_cli.runtime import quiet_libraries
    from vlmft_cli.settings import Settings

    reporter = reporter or NullReporter()
    quiet_libraries()
    backend = backend_for(model)
    attention_backend = select_attention(attention, reporter, backend)
    obstacle = packing_obstacle(1, backend, attention_backend)
    if obstacle:
        raise ConfigError(f"cannot benchmark packing: {obstacle}")
    train_file = stage_file(data, 1, "train")
    if not train_file.is_file():
        raise DataError(f"{train_file} not found: is {data} a folder written by `vlmft data extract`?")
    source = Path(backend.resolve(model, home))
    label = "mid" if size == MID_SIZE else "custom"
    folder = ensure_bench_model(source, home / "bench" / f"packing-{label}-{source.name}", size)
    settings = Settings(
        model=str(folder), home=home, precision="fp32", attention=attention, gradient_checkpointing=False,
        lora_r=16, lora_alpha=32, lora_dropout=0.0, seed=seed, micro_batch_size=micro_batch_size, global_batch_size=global_batch_size,
    )  # fmt: skip
    lora_model, loaded = build_model(settings, backend, attention_backend, device="cpu")
    processor = loaded.processor
    samples = list(iter_samples(train_file, data))
    examples, _ = build_examples(samples, backend=backend, processor=processor, max_frames=4, frame_sampling="uniform-last", max_length=settings.max_length)
    packing = PackingData.for_backend(examples, backend, processor, settings.max_length)
    accumulation = packed_accumulation(global_batch_size, micro_batch_size, packing.mean_qas_per_video)
    plan = plan_epoch(packing, seed=seed, epoch=0, global_batch_size=global_batch_size, per_step=accumulation)
    summary = summarize(packing, plan)
    full_steps = [step for step in plan if sum(len(s) for batch in step for s in batch) == global_batch_size]
    if len(full_steps) < steps + 1:
        raise DataError(f"{train_file} has {len(full_steps)} full steps of {global_batch_size} QAs; the benchmark needs {steps + 1}")

    pad = processor.pad_token_id
    packed_set, unpacked_set = PackedDataset(examples, data, backend, processor, packing), ExampleDataset(examples, data, backend, processor)
    packed_collate = PackedCollator(backend, pad, attention_backend.attn_implementation, torch.float32)
    unpacked_collate = Collator(backend, pad)

    def fetch_packed(batch: Sequence[tuple[int, ...]]) -> dict[str, Any]:
        return packed_collate([packed_set[sequence] for sequence in batch])

    def fetch_unpacked(batch: Sequence[int]) -> dict[str, Any]:
        return unpacked_collate([unpacked_set[qa] for qa in batch])

    optimizer = torch.optim.AdamW([p for p in lora_model.parameters() if p.requires_grad], lr=1e-5)
    lora_model.train()
    result = PackingFigures(
        model=model, bench_model=str(folder), global_batch_size=global_batch_size, micro_batch_size=micro_batch_size,
        packed_accumulation=accumulation, qas=packing.num_qas, videos=len(packing.groups), tokens_per_frame=backend.tokens_per_frame(processor),
        tokens_unpacked=summary.tokens_unpacked, tokens_packed=summary.tokens_packed, steps=steps, threads=torch.get_num_threads(),
    )  # fmt: skip
    with reporter.progress("bench packing", total=2 * (steps + 1), unit="steps") as task:
        for number, step in enumerate(full_steps[: steps + 1]):
            qas = [qa for batch in step for sequence in batch for qa in sequence]
            unpacked_batches = [qas[i : i + micro_batch_size] for i in range(0, len(qas), micro_batch_size)]
            packed_s = _timed_step(lora_model, optimizer, step, fetch_packed)
            task.advance()
            unpacked_s = _timed_step(lora_model, optimizer, unpacked_batches, fetch_unpacked)
            task.advance()
            if number > 0:  # the first pair warms up allocators and caches
                result.packed_qas_per_s.append(len(qas) / packed_s)
                result.unpacked_qas_per_s.append(len(qas) / unpacked_s)
    parameters = {
        "data": str(data), "model": model, "steps": steps, "global_batch_size": global_batch_size, "micro_batch_size": micro_batch_size,
        "attention": attention, "seed": seed, "max_frames": 4, "precision": "fp32", "device": "cpu", "size": size,
    }  # fmt: skip
    return packing_document(result, parameters)

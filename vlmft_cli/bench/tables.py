"""What `vlmft bench` prints: each benchmark document (or comparison) as a titled table plus notes
(attention, step, data, extract, packing).

Pure data (title, columns, rows, lines below); `vlmft_cli.cli.bench` hands it to the CLI's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlmft_cli.bench.compare import Comparison
from vlmft_cli.bench.results import BenchDocument


@dataclass
class TableSpec:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    lines: list[str] = field(default_factory=list)


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def device_label(device: dict[str, Any]) -> str:
    if device.get("gpu"):
        return f"{device['gpu']} (torch {device.get('torch')}, CUDA {device.get('cuda')})"
    if "torch" not in device:  # a benchmark that never imports torch (`device.host_info`)
        return f"CPU {device.get('cpu', '?')}, {device.get('cpu_cores', '?')} cores"
    return f"CPU {device.get('cpu', '?')}, {device.get('torch_threads', '?')} threads (torch {device.get('torch')})"


def attention_table(document: BenchDocument) -> TableSpec:
    p = document.parameters
    layout = p["layout"]
    backward = bool(p.get("backward"))
    columns = ["backend", "mask", "seq len", "fwd ms (median)", "fwd min–max", "fwd IQR", "fwd TFLOP/s"]
    if backward:
        columns += ["fwd+bwd ms (median)", "fwd+bwd min–max", "fwd+bwd TFLOP/s"]
    columns.append("peak MiB")
    rows = []
    for entry in document.entries:
        m, key = entry.metrics, entry.key
        if "error" in entry.details:
            rows.append([key["backend"], key.get("mask", "causal"), key["seq_len"], entry.details["error"], *[""] * (len(columns) - 4)])
            continue
        row = [key["backend"], key.get("mask", "causal"), key["seq_len"], _num(m["forward_ms_median"]), f"{_num(m['forward_ms_min'])}–{_num(m['forward_ms_max'])}", _num(m["forward_ms_iqr"]), _num(m["forward_tflops"])]
        if backward:
            row += [_num(m["forward_backward_ms_median"]), f"{_num(m['forward_backward_ms_min'])}–{_num(m['forward_backward_ms_max'])}", _num(m["forward_backward_tflops"])]
        row.append(_num(m.get("peak_memory_mib")))
        rows.append(row)
    title = (
        f"Attention: {layout['heads']} query / {layout['kv_heads']} KV heads × {layout['head_dim']} ({p['layout_source']}), "
        f"batch {p['batch']}, {p['dtype']}, masks {', '.join(p.get('masks', ['causal']))}, {p['repeats']} repeats after {p['warmup']} warm-up — {device_label(document.device)}"
    )
    lines = [f"unavailable: {item['name']}: {item['reason']}" for item in document.unavailable]
    return TableSpec(title, columns, rows, lines)


def step_table(document: BenchDocument) -> TableSpec:
    p = document.parameters
    entry = document.entries[0]
    m, d = entry.metrics, entry.details
    batch = d["batch"]
    matmul = d.get("matmul") or {}
    flops = d["flops"]
    executed, necessary, waste = flops["executed"], flops["necessary"], flops["waste_tflop"]
    wasted = ", ".join(f"{name.replace('_', ' ')} {_num(value)}" for name, value in waste.items() if value)
    rows = [
        ["step time per micro-batch", f"{_num(m['step_s'])} s", "forward+backward + optimizer ÷ accumulation"],
        ["forward+backward", f"{_num(m['forward_backward_s_median'])} s", f"min {_num(m['forward_backward_s_min'])}, max {_num(m['forward_backward_s_max'])}, IQR {_num(m['forward_backward_s_iqr'])}"],
        ["optimizer (clip, AdamW, zero)", f"{_num(m['optimizer_s_median'])} s", ""],
        ["optimizer step", f"{_num(m['optimizer_step_s'])} s", f"{d['accumulation']} micro-batches accumulated"],
        ["QAs/s", _num(m["qas_per_s"]), f"{batch['qas']} QAs in {batch['samples']} {'packed sequence(s)' if d['packed'] else 'sample(s)'}, {batch['frames']} frames"],
        ["tokens/s", _num(m["tokens_per_s"]), f"{batch['tokens']} tokens per micro-batch ({batch['image_tokens']} image, {batch['label_tokens']} labelled, {batch['padded_tokens']} padded)"],
        ["peak memory", f"{_num(m['peak_memory_mib'])} MiB", d["memory"]["kind"]],
        ["executed FLOPs per micro-batch", f"{_num(m['executed_tflop_per_micro_batch'])} TFLOP", f"forward {_num(executed['forward_tflop'])}, backward {_num(executed['backward_tflop'])}, recompute {_num(executed['recompute_tflop'])}"],
        ["necessary FLOPs per micro-batch", f"{_num(m['necessary_tflop_per_micro_batch'])} TFLOP", f"forward {_num(necessary['forward_tflop'])}, backward {_num(necessary['backward_tflop'])}"],
        ["executed / necessary", _num(m["executed_over_necessary"]), f"beyond the necessary (TFLOP): {wasted}" if wasted else "nothing beyond the necessary"],
        ["achieved (necessary)", f"{_num(m['necessary_tflops'])} TFLOP/s", f"executed {_num(m['executed_tflops'])} TFLOP/s"],
        ["MFU vs datasheet", _num(m["mfu_datasheet"]), f"peak {_num(d.get('datasheet_bf16_tflops'))} TFLOP/s (profile {p['profile']})"],
        ["MFU vs measured matmul", _num(m["mfu_measured"]), f"{matmul['size']}³ {matmul['dtype']} matmul: {_num(m['measured_matmul_tflops'])} TFLOP/s; HFU {_num(m['hfu_measured'])}" if matmul else "not measured"],
        ["parameters", f"{d['parameters']['trainable']:,} trainable", f"of {d['parameters']['total']:,}"],
    ]
    projection = d.get("projection")
    if projection:
        rows.append([
            "projected curriculum",
            f"{_num(m['projected_curriculum_h'])} h",
            f"stage 1 {_num(m['projected_stage1_h'])} h ({'packed' if projection['stage1_packed'] else 'one QA per sample'}), stage 2 {_num(m['projected_stage2_h'])} h, on RoboVQA at this step's rate",
        ])
    title = (
        f"Training step: {entry.key['model']}, stage {p['stage']} ({p['pack']}), profile {p['profile']} ({p['precision']}, {p['attention']}, "
        f"gradient checkpointing {'on' if d['gradient_checkpointing'] else 'off'}), median of {p['steps']} — {device_label(document.device)}"
    )
    return TableSpec(title, ["", "value", ""], rows, [f"FLOPs: {document.notes['flops']}", f"Projection: {document.notes['projection']}"])


def _verdicts(meets: dict[str, bool]) -> Any:
    """`verdict(name)`: "meets" or "misses" for a named target."""
    return lambda name: "meets" if meets[name] else "misses"


def data_table(document: BenchDocument) -> TableSpec:
    p = document.parameters
    entry = document.entries[0]
    m, d = entry.metrics, entry.details
    targets = d["targets"]
    verdict = _verdicts(d["meets"])

    rows = [
        ["loader samples/s", _num(m["loader_samples_per_s"]), f"{d['loader']['batches']} micro-batches of {p['micro_batch_size']}, {p['workers']} worker(s); first batch after {_num(m['startup_s'])} s"],
        ["step samples/s", _num(m["step_samples_per_s"]), d["step"]],
        ["loader ÷ step", _num(m["ratio"]), f"{verdict('ratio')} the ≥ {targets['ratio']:g}× target"],
        ["padding, length-grouped", f"{m['padding_share_grouped']:.1%}", f"{verdict('padding_share_grouped')} the < {targets['padding_share_grouped']:.0%} target (groups of {d['length_group_size']})"],
        ["padding, shuffled", f"{m['padding_share_shuffled']:.1%}", ""],
    ]
    title = f"Dataloader: stage {p['stage']}, {d['examples']} examples in {p['data']}, profile {p['profile']} — {device_label(document.device)}"
    return TableSpec(title, ["", "value", ""], rows, [document.notes["cpu"]])


def extract_table(document: BenchDocument) -> TableSpec:
    p = document.parameters
    entry = document.entries[0]
    m, d = entry.metrics, entry.details
    rows = [
        ["extract", _num(m["extract_s"]), _num(m["extract_records_per_s"]), _num(m["extract_frames_per_s"]), _num(m["extract_cpu_s"])],
        ["bare loop", _num(m["loop_s"]), _num(m["loop_records_per_s"]), _num(m["loop_frames_per_s"]), _num(m["loop_cpu_s"])],
    ]
    verdict = "meets" if d["meets_target"] else "misses"
    lines = [
        f"extract / loop = {m['ratio']:.2f} ({verdict} the {d['target_ratio']:.2f} target); CPU-time ratio {m['cpu_ratio']:.2f} (less disturbed by other load)",
        f"peak memory: main {_num(m['peak_rss_main_mib'])} MiB, largest worker {_num(m['peak_rss_worker_mib'])} MiB, all {_num(m['peak_rss_total_mib'])} MiB",
    ]
    title = (
        f"Extraction: {d['records']} videos, {d['frames']} frames, {p['workers']} workers, {p['size']}px, "
        f"best of {p['repeat']} — {device_label(document.device)}"
    )
    return TableSpec(title, ["", "seconds", "records/s", "frames/s", "CPU seconds"], rows, lines)


def packing_table(document: BenchDocument) -> TableSpec:
    p = document.parameters
    entry = document.entries[0]
    m, d = entry.metrics, entry.details
    targets = d["targets"]
    verdict = _verdicts(d["meets"])

    rows = [
        ["unpacked", f"{m['tokens_unpacked']:,}", _num(m["median_unpacked_qas_per_s"])],
        ["packed", f"{m['tokens_packed']:,}", _num(m["median_packed_qas_per_s"])],
    ]
    lines = [
        f"tokens packed/unpacked = {m['token_ratio']:.3f} ({verdict('token_ratio')} the ≤ {targets['token_ratio']:g} target); "
        f"QAs/s packed/unpacked = {m['speedup']:.2f}× ({verdict('speedup')} the ≥ {targets['speedup']:g}× target)",
        f"model: {entry.key['model']} as a random-weight benchmark model ({d['bench_model']}), {d['tokens_per_frame']} tokens per frame; "
        f"{d['packed_accumulation']} packed micro-batches per step, median of {d['steps']} steps",
    ]
    title = (
        f"Packing: {d['qas']} QAs of {d['videos']} videos, {p['global_batch_size']} QAs per step, "
        f"{p['micro_batch_size']} per micro-batch — {device_label(document.device)}"
    )
    return TableSpec(title, ["", "tokens per epoch", "QAs/s (median)"], rows, lines)


def comparison_table(comparison: Comparison) -> TableSpec:
    rows = [[", ".join(f"{k}={v}" for k, v in ratio.key.items()), ratio.metric, _num(ratio.a), _num(ratio.b), _num(ratio.ratio)] for ratio in comparison.ratios]
    lines = [f"A = {comparison.a}: {device_label(comparison.device_a)}", f"B = {comparison.b}: {device_label(comparison.device_b)}"]
    lines += [f"only in A: {key}" for key in comparison.only_in_a] + [f"only in B: {key}" for key in comparison.only_in_b]
    return TableSpec(f"bench {comparison.bench}: B/A", ["entry", "metric", "A", "B", "B/A"], rows, lines)


def document_table(document: BenchDocument) -> TableSpec:
    tables = {"attention": attention_table, "step": step_table, "data": data_table, "extract": extract_table, "packing": packing_table}
    return tables[document.bench](document)

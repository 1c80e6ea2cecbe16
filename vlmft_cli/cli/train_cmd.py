"""`vlmft train`: one curriculum stage on processed data, as a new run or a resumed one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vlmft_cli.cli import output
from vlmft_cli.cli.options import ConfigOption, JsonOption, ProfileOption

HP = "Hyperparameters (defaults: the stage's reference recipe)"
HW = "Hardware (defaults: the profile)"
CADENCE = "Checkpoints and evaluation"


def train(
    stage: Annotated[int | None, typer.Option("--stage", "-s", min=1, max=2, help="1 = one QA per sample, 2 = whole conversations.", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Processed data folder (from `vlmft data extract`).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name, hub id or local path (default tiny-internvl3).", show_default=False)] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="Model backend plugin (default: the one that recognises --model).", show_default=False)] = None,
    profile: ProfileOption = None,
    config: ConfigOption = None,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Run name prefix (default stage{N}).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Experiments folder (default experiments).", show_default=False)] = None,
    init_from: Annotated[str | None, typer.Option("--init-from", help="Stage 2: stage-1 checkpoint or run to start from; 'none' for the base model. Default: the newest finished stage-1 run.", show_default=False)] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue a run: 'latest', a checkpoint or a run folder.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show settings, token budget and memory estimate, then exit.")] = False,
    json: JsonOption = False,
    nproc: Annotated[int | None, typer.Option("--nproc", min=1, help="Data-parallel processes (one per GPU) through torchrun; the global batch stays the same.", show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after N optimizer steps.", rich_help_panel=HP, show_default=False)] = None,
    num_epochs: Annotated[float | None, typer.Option("--epochs", help="Passes over the data.", rich_help_panel=HP, show_default=False)] = None,
    subset_ratio: Annotated[float | None, typer.Option("--subset-ratio", help="Share of the training videos to use.", rich_help_panel=HP, show_default=False)] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (4e-5 stage 1, 2e-5 stage 2).", rich_help_panel=HP, show_default=False)] = None,
    global_batch_size: Annotated[int | None, typer.Option("--global-batch-size", help="Samples per optimizer step (32).", rich_help_panel=HP, show_default=False)] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", rich_help_panel=HP, show_default=False)] = None,
    warmup_ratio: Annotated[float | None, typer.Option("--warmup-ratio", rich_help_panel=HP, show_default=False)] = None,
    max_grad_norm: Annotated[float | None, typer.Option("--max-grad-norm", rich_help_panel=HP, show_default=False)] = None,
    lr_scheduler: Annotated[str | None, typer.Option("--lr-scheduler", help="cosine, linear, constant, constant_with_warmup.", rich_help_panel=HP, show_default=False)] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", rich_help_panel=HP, show_default=False)] = None,
    lora_alpha: Annotated[int | None, typer.Option("--lora-alpha", rich_help_panel=HP, show_default=False)] = None,
    lora_dropout: Annotated[float | None, typer.Option("--lora-dropout", rich_help_panel=HP, show_default=False)] = None,
    lora_pattern: Annotated[str | None, typer.Option("--lora-pattern", help="Regex over module names (widens or replaces the default).", rich_help_panel=HP, show_default=False)] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Frames per sample (4 stage 1, 10 stage 2); the final frame is always kept.", rich_help_panel=HP, show_default=False)] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Frame rate of the source clips (Qwen timestamps follow it; default: the backend's).", rich_help_panel=HP, show_default=False)] = None,
    frame_sampling: Annotated[str | None, typer.Option("--frame-sampling", help="uniform-last or last.", rich_help_panel=HP, show_default=False)] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Longest sequence (2048 stage 1, 4096 stage 2).", rich_help_panel=HP, show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", rich_help_panel=HP, show_default=False)] = None,
    pack: Annotated[str | None, typer.Option("--pack", help="Stage 1: shared-prefix (default where the attention honours a block mask: all QAs of a video in one sequence, frames once) or none (one QA per sample).", rich_help_panel=HP, show_default=False)] = None,
    micro_batch_size: Annotated[int | None, typer.Option("--micro-batch-size", rich_help_panel=HW, show_default=False)] = None,
    eval_batch_size: Annotated[int | None, typer.Option("--eval-batch-size", rich_help_panel=HW, show_default=False)] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="bf16, fp16 or fp32.", rich_help_panel=HW, show_default=False)] = None,
    quantize: Annotated[str | None, typer.Option("--quantize", help="none, 4bit (QLoRA NF4) or 8bit.", rich_help_panel=HW, show_default=False)] = None,
    attention: Annotated[str | None, typer.Option("--attention", help="Attention backend (see `vlmft plugins list`).", rich_help_panel=HW, show_default=False)] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", rich_help_panel=HW, show_default=False)] = None,
    memory_cap_gb: Annotated[float | None, typer.Option("--memory-cap-gb", rich_help_panel=HW, show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Dataloader workers.", rich_help_panel=HW, show_default=False)] = None,
    save_steps: Annotated[int | None, typer.Option("--save-steps", rich_help_panel=CADENCE, show_default=False)] = None,
    save_every_hours: Annotated[float | None, typer.Option("--save-every-hours", help="Checkpoint cadence in hours, turned into steps (default 1).", rich_help_panel=CADENCE, show_default=False)] = None,
    eval_steps: Annotated[int | None, typer.Option("--eval-steps", help="Default: evaluate at every checkpoint.", rich_help_panel=CADENCE, show_default=False)] = None,
    keep_last: Annotated[int | None, typer.Option("--keep-last", help="Checkpoints kept besides the best (3).", rich_help_panel=CADENCE, show_default=False)] = None,
    report_to: Annotated[str | None, typer.Option("--report-to", help="none or tensorboard (CSV is always written).", rich_help_panel=CADENCE, show_default=False)] = None,
) -> None:
    """Train one curriculum stage with LoRA (QLoRA with --quantize 4bit).

    Example: vlmft train --stage 1 --data robovqa --profile gb10

    Example: vlmft train --stage 2 --data robovqa --profile gb10   (starts from the newest stage-1 run)

    Example: vlmft train --stage 1 --data robovqa --profile h100-80gb --nproc 8   (or: torchrun --nproc-per-node 8 -m vlmft_cli train …)
    """
    from vlmft_cli.training import distributed

    if nproc and nproc > 1 and not distributed.is_distributed_launch():
        raise typer.Exit(distributed.launch(nproc, sys.argv[1:]))

    from vlmft_cli.settings import resolve_settings
    from vlmft_cli.training.run import TrainRequest
    from vlmft_cli.training.run import train as run_training

    cli = {
        "data": data, "model": model, "backend": backend, "experiment": experiment, "out": out,
        "max_steps": max_steps, "num_epochs": num_epochs, "subset_ratio": subset_ratio, "learning_rate": learning_rate,
        "global_batch_size": global_batch_size, "weight_decay": weight_decay, "warmup_ratio": warmup_ratio,
        "max_grad_norm": max_grad_norm, "lr_scheduler": lr_scheduler, "lora_r": lora_r, "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout, "lora_pattern": lora_pattern, "max_frames": max_frames, "frame_sampling": frame_sampling,
        "max_length": max_length, "fps": fps, "seed": seed, "pack": pack, "micro_batch_size": micro_batch_size, "eval_batch_size": eval_batch_size,
        "precision": precision, "quantization": quantize, "attention": attention, "gradient_checkpointing": gradient_checkpointing,
        "memory_cap_gb": memory_cap_gb, "dataloader_workers": workers, "save_steps": save_steps,
        "save_every_hours": save_every_hours, "eval_steps": eval_steps, "keep_last": keep_last, "report_to": report_to,
    }  # fmt: skip
    resolved = resolve_settings(stage=stage, profile=profile, config_file=config, cli=cli)
    result = run_training(TrainRequest(resolved=resolved, init_from=init_from, resume=resume, dry_run=dry_run), output.make_reporter(quiet=json))
    if distributed.rank() != 0:
        return  # rank 0 speaks for the run
    if json:
        output.print_json({"status": result.status, "run": result.run_dir, "step": result.global_step, "checkpoint": result.last_checkpoint, "train_loss": result.train_loss, "eval": result.eval_metrics, "plan": result.plan})
        return
    if result.plan is not None:
        show_plan(result.plan)
        return
    output.console.print(result.message)


def show_plan(plan: dict) -> None:
    output.print_table(f"Settings for stage {plan['stage']}", ["key", "value", "source"], [[r["key"], r["value"], r["source"]] for r in plan["settings"] or []])
    rows = []
    for split, info in plan["data"].items():
        tokens = info["tokens_per_example"]
        rows.append([split, info["examples"], info["qas"], info["rejected_lines"], info["rejected_too_long"], info["turns_dropped"], f"{tokens['min']}/{tokens['median']:g}/{tokens['max']}", f"{info['tokens_total']:,}"])
    output.print_table("Data", ["split", "examples", "QAs", "bad lines", "too long", "turns dropped", "tokens min/median/max", "tokens total"], rows)
    packed = plan.get("pack") == "shared-prefix"
    lines = [
        f"optimizer steps: {plan['optimizer_steps']} ({plan['steps_per_epoch']} per epoch), accumulation {plan['gradient_accumulation_steps']}",
        f"padding share {'of packed micro-batches' if packed else 'with length grouping'}: {plan['padding_share']:.1%}",
    ]
    if plan.get("tokens_packed") is not None:
        packing = plan["packing"]
        lines.append(
            f"tokens per epoch: {plan['tokens_unpacked']:,} unpacked, {plan['tokens_packed']:,} packed ({plan['packing_ratio']:.2f}×; "
            f"{packing['mean_qas_per_video']:g} QAs per video, packed accumulation {packing['packed_accumulation']}) — training {'packed' if packed else 'unpacked'}"
        )
    else:
        lines.append(f"tokens per epoch: {plan['tokens_unpacked']:,} (not packed)")
    memory = plan.get("memory_estimate")
    if memory:
        verdict = "fits" if memory["fits"] else "does NOT fit"
        lines.append(f"estimated peak memory {memory['peak_gb']:.2f} GB (weights {memory['weights_gb']:.2f}, optimizer {memory['optimizer_gb']:.3f}, activations {memory['activations_gb']:.2f}) {verdict} the {memory['cap_gb']:g} GB cap")
    for line in lines:
        output.console.print(line)



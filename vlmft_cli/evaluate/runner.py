"""`evaluate_checkpoint`: the library function behind `vlmft eval`.

It resolves what to evaluate (`target`), loads the split with the same length policy as training, loads
the base model with the run's precision and attention and puts the checkpoint's adapter on it
(`PeftModel.from_pretrained`, no optimizer), measures teacher-forced loss and perplexity
(`evaluate.loss.evaluate_loss`), optionally generates an answer to every question with its true
history and scores it, and writes metrics.json, metrics.md and predictions.jsonl.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmft_cli import runs
from vlmft_cli.errors import DataError
from vlmft_cli.evaluate.target import EvalRequest, EvalTarget, resolve_target
from vlmft_cli.model_backend import pad_token_id
from vlmft_cli.reporting import NullReporter, Reporter

__all__ = ["EvalReport", "EvalRequest", "evaluate_checkpoint"]

METRICS_SCHEMA = 2  # 2: per_task by full task tag, ci95 intervals, score_format


@dataclass
class EvalReport:
    """Where the evaluation went, its metrics document, and how many answers were generated."""

    output_dir: Path
    metrics: dict[str, Any]
    predictions: int = 0
    files: list[Path] = field(default_factory=list)

    @property
    def message(self) -> str:
        return f"{self.metrics['model']['label']}: {self.metrics['eval_set']['qas']} QAs evaluated; files in {self.output_dir}"


@dataclass
class LoadedForEval:
    model: Any  # in eval mode, on `device`
    backend: Any
    processor: Any
    device: str
    attention: str  # the implementation in use (after any fallback)
    attention_backend: Any = None  # its backend object (whether it honours a block mask, for packing)


def load_model(target: EvalTarget, reporter: Reporter) -> LoadedForEval:
    """The base model with the checkpoint's adapter (if any), with the target's precision and attention."""
    from vlmft_cli.attention import select_attention
    from vlmft_cli.backends import backend_for
    from vlmft_cli.chat_pieces import apply_system_prompt
    from vlmft_cli.lora_model import check_attention, load_options
    from vlmft_cli.runtime import pick_device

    settings = target.settings
    device = pick_device(target.profile)
    backend = backend_for(settings.model, settings.backend)
    attention = select_attention(settings.attention, reporter, backend)
    loaded = backend.load(settings.model, load_options(settings, attention, device), settings.home)
    loaded.processor = apply_system_prompt(backend, loaded.processor, settings.system_prompt)
    model = loaded.model
    check_attention(model, attention.attn_implementation)
    if target.checkpoint is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(target.checkpoint.path), is_trainable=False)
    if settings.quantization == "none":
        model = model.to(device)
    model.eval()
    return LoadedForEval(model, backend, loaded.processor, device, attention.name, attention)


def had_generation(metrics_path: Path) -> bool:
    """Whether an existing metrics.json holds generation results."""
    try:
        return json.loads(metrics_path.read_text(encoding="utf-8")).get("generation") is not None
    except (OSError, ValueError, AttributeError):
        return False


def evaluate_checkpoint(request: EvalRequest, reporter: Reporter | None = None) -> EvalReport:
    """Evaluate a checkpoint (or the base model) on one split; see the module docstring."""
    reporter = reporter or NullReporter()
    started = time.monotonic()
    from vlmft_cli.evaluate.generation import PromptEncoder, generate_answers, stop_token_ids
    from vlmft_cli.evaluate.loss import EvalData, evaluate_loss, pack_spec
    from vlmft_cli.evaluate.metrics import Prediction, merge_groups
    from vlmft_cli.evaluate.prompts import generation_jobs
    from vlmft_cli.evaluate.report_files import METRICS_FILE, write_eval_files
    from vlmft_cli.evaluate.scoring import parse_score_format, score_answer
    from vlmft_cli.evaluate.subset import stratified_subset
    from vlmft_cli.pipeline.splits import load_split, stage_file
    from vlmft_cli.runtime import quiet_libraries

    quiet_libraries()
    score_format = parse_score_format(request.score_format)
    target = resolve_target(request, reporter)
    settings = target.settings
    assert settings.data is not None  # resolve_target checks it
    reporter.info(f"Evaluating {target.label} on stage {settings.stage} {request.split} ({stage_file(settings.data, settings.stage, request.split)})")
    loaded = load_model(target, reporter)
    model, backend, processor, device = loaded.model, loaded.backend, loaded.processor, loaded.device
    examples, summary = load_split(settings, request.split, backend, processor, reporter, required=True)  # type: ignore[misc]
    examples = examples[: request.limit] if request.limit else examples
    if request.eval_limit:
        chosen = stratified_subset(examples, request.eval_limit, settings.seed)
        examples = examples if chosen is None else [examples[i] for i in chosen]
        reporter.info(f"the seeded subset of at most {request.eval_limit} QAs per task type (seed {settings.seed}): {len(examples)} examples")
    if not examples:
        raise DataError(f"no usable examples in {summary.path}")

    batch_size = request.batch_size or settings.eval_batch_size
    tokenizer = processor.tokenizer
    stop_ids = stop_token_ids(backend, tokenizer)
    pad_id = pad_token_id(tokenizer, stop_ids[0])
    pack = pack_spec(settings, backend, loaded.attention_backend, reporter)
    data = EvalData(examples, settings.data, backend, processor, pad_id, pack)
    workers = settings.dataloader_workers
    loss = evaluate_loss(model, data, batch_size=batch_size, device=device, workers=workers, reporter=reporter)

    predictions = None
    if request.generate:
        jobs = generation_jobs(examples)
        answers = generate_answers(
            model,
            jobs,
            PromptEncoder(examples, settings.data, backend, processor),
            tokenizer=tokenizer,
            stop_ids=stop_ids,
            batch_size=batch_size,
            max_new_tokens=request.max_new_tokens,
            device=device,
            reporter=reporter,
            workers=workers,
        )
        predictions = [Prediction(job, answer, score_answer(answer, job.reference, score_format)) for job, answer in zip(jobs, answers, strict=True)]

    previous = target.output_dir / METRICS_FILE
    if predictions is None and had_generation(previous):
        reporter.warning(f"replacing the evaluation in {target.output_dir}, which had generation results, with a loss-only one")
    metrics = {
        "schema": METRICS_SCHEMA,
        "created": runs.utc_now(),
        "model": target.describe(),
        "eval_set": {
            "stage": settings.stage,
            "split": request.split,
            "data": str(settings.data),
            "file": str(summary.path),
            "limit": request.limit,
            "eval_limit": request.eval_limit,
            "packed": pack is not None,
            "examples": len(examples),
            "qas": sum(example.num_qas for example in examples),
            "rejected_lines": summary.rejected,
            "rejected_too_long": summary.length_report.rejected,
            "turns_dropped": summary.length_report.turns_dropped,
            "max_frames": settings.max_frames,
            "frame_sampling": settings.frame_sampling,
            "max_length": settings.max_length,
        },
        "generation": {"max_new_tokens": request.max_new_tokens, "batch_size": batch_size, "decoding": "greedy", "score_format": str(score_format)} if request.generate else None,
        "hardware": {"device": device, "profile": target.profile.name, "precision": settings.precision, "quantization": settings.quantization, "attention": loaded.attention},
        **merge_groups(examples, loss.as_dict(), predictions, per_turn=settings.stage == 2, qa_losses=loss.qa_losses),
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    files = write_eval_files(target.output_dir, metrics, predictions)
    return EvalReport(output_dir=target.output_dir, metrics=metrics, predictions=len(predictions or []), files=files)

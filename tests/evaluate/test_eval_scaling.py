"""Evaluation that scales to the full split: packed teacher-forced loss equal to one QA at a time, the
seeded per-task subset at checkpoints with the whole split at the end, and per-task counts that add up."""

import csv
import json
import random
from collections import Counter, defaultdict

import pytest
import torch
from typer.testing import CliRunner

from vlmft_cli import runs
from vlmft_cli.backends import backend_for
from vlmft_cli.data.schema import TurnInfo, iter_samples
from vlmft_cli.evaluate.loss import EvalData, PackSpec, evaluate_loss
from vlmft_cli.evaluate.runner import EvalRequest, evaluate_checkpoint
from vlmft_cli.evaluate.subset import stratified_subset
from vlmft_cli.model_backend import LoadOptions, Turn
from vlmft_cli.pipeline.dataset import Collator, ExampleDataset
from vlmft_cli.pipeline.examples import Example, build_examples
from vlmft_cli.settings import SettingsInput
from vlmft_cli.training.recipe import TrainRequest, train

TOLERANCE = 1e-5


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def split_task_types(data, stage):
    """Task type of every QA of a split, read from the JSONL (not through the pipeline)."""
    lines = jsonl(data / f"stage{stage}" / "val.jsonl")
    if stage == 1:
        return [line["metadata"]["task_type"] for line in lines]
    return [turn["task_type"] for line in lines for turn in line["metadata"]["turns"]]


# --- 1. packed teacher-forced evaluation ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_stage1(processed_data, vlmft_home):
    backend = backend_for("tiny-internvl3")
    loaded = backend.load("tiny-internvl3", LoadOptions(precision="fp32", attn_implementation="sdpa"), vlmft_home)
    samples = list(iter_samples(processed_data / "stage1" / "val.jsonl", processed_data))
    examples, _ = build_examples(samples, backend=backend, processor=loaded.processor, max_frames=4, frame_sampling="uniform-last", max_length=2048)
    return backend, loaded, examples


def reference_losses(model, backend, processor, examples, root):
    """Each QA alone through the model's own loss (mean over its label tokens) × its label tokens."""
    dataset, collate = ExampleDataset(examples, root, backend, processor), Collator(backend, processor.tokenizer.pad_token_id)
    sums = []
    with torch.no_grad():
        for index in range(len(examples)):
            batch = collate([dataset[index]])
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            sums.append((float(model(**batch).loss) * tokens, tokens))
    return sums


@pytest.mark.slow
def test_packed_evaluation_equals_one_qa_at_a_time_per_qa_and_per_task(tiny_stage1, processed_data):
    backend, loaded, examples = tiny_stage1
    model, processor = loaded.model, loaded.processor
    pad = processor.tokenizer.pad_token_id
    fed = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: fed.append(kwargs["input_ids"].numel()), with_kwargs=True)
    try:
        unpacked = evaluate_loss(model, EvalData(examples, processed_data, backend, processor, pad), batch_size=2, device="cpu")
        unpacked_tokens, fed[:] = sum(fed), []
        packed_data = EvalData(examples, processed_data, backend, processor, pad, PackSpec("sdpa", torch.float32, 2048))
        packed = evaluate_loss(model, packed_data, batch_size=2, device="cpu", workers=2)  # frames decoded in worker processes
        packed_tokens = sum(fed)
    finally:
        hook.remove()
    # Packing really happened: every video's frames once, so far fewer tokens went through the model.
    videos = len({example.video_id for example in examples})
    assert videos < len(examples) and packed_tokens < 0.8 * unpacked_tokens

    expected = reference_losses(model, backend, processor, examples, processed_data)
    for result in (unpacked, packed):
        assert [(qa.example, qa.turn) for qa in result.qa_losses] == [(i, 0) for i in range(len(examples))]
        for qa, (loss_sum, tokens) in zip(result.qa_losses, expected, strict=True):
            assert qa.tokens == tokens and qa.loss_sum == pytest.approx(loss_sum, rel=TOLERANCE)
    by_task = defaultdict(lambda: [0.0, 0])
    for example, (loss_sum, tokens) in zip(examples, expected, strict=True):
        by_task[example.turn_info[0].task_type][0] += loss_sum
        by_task[example.turn_info[0].task_type][1] += tokens
    assert set(packed.per_task) == set(unpacked.per_task) == set(by_task) and len(by_task) > 1
    for task, (loss_sum, tokens) in by_task.items():
        assert abs(packed.per_task[task].loss - unpacked.per_task[task].loss) <= TOLERANCE * unpacked.per_task[task].loss
        assert packed.per_task[task].loss == pytest.approx(loss_sum / tokens, rel=TOLERANCE)
    assert packed.samples == unpacked.samples == len(examples)


def test_a_subset_of_a_packed_evaluation_is_the_same_as_evaluating_only_it(tiny_stage1, processed_data):
    backend, loaded, examples = tiny_stage1
    data = EvalData(examples, processed_data, backend, loaded.processor, loaded.processor.tokenizer.pad_token_id, PackSpec("sdpa", torch.float32, 2048))
    chosen = [0, 3, 4, len(examples) - 1]
    alone = evaluate_loss(loaded.model, data, batch_size=3, device="cpu", indices=chosen)
    whole = evaluate_loss(loaded.model, data, batch_size=3, device="cpu")
    assert [qa.example for qa in alone.qa_losses] == chosen
    assert alone.overall.loss == pytest.approx(whole.subset(chosen).overall.loss, rel=TOLERANCE)
    assert alone.overall.loss != pytest.approx(whole.overall.loss, rel=1e-3)


# --- 2. the seeded, stratified checkpoint subset ----------------------------------------------------


def example(index, *task_types):
    turns = tuple(Turn(role, "x") for _ in task_types for role in ("user", "assistant"))
    infos = tuple(TurnInfo(task_type=task, subtype=None, format="freeform", frame_range=(0, 15)) for task in task_types)
    return Example(id=f"clip{index // 4}-{index}", images=("f.jpg",), turns=turns, turn_info=infos, video_id=f"clip{index // 4}", length=10)


def chosen_ids(examples, limit, seed):
    chosen = stratified_subset(examples, limit, seed)
    return None if chosen is None else [examples[i].id for i in chosen]


def test_the_subset_holds_at_most_n_qas_per_task_type_chosen_by_the_seed():
    mix = ["planning"] * 10 + ["success"] * 3 + ["affordance"] * 1
    examples = [example(i, task) for i, task in enumerate(mix)]
    ids = chosen_ids(examples, 2, seed=42)
    picked = Counter(e.turn_info[0].task_type for e in examples if e.id in ids)
    assert picked == {"planning": 2, "success": 2, "affordance": 1}
    assert ids == [e.id for e in examples if e.id in ids]  # in data order
    # The same subset whatever the order the examples come in, and every time; another seed, another one.
    shuffled = examples[:]
    random.Random(0).shuffle(shuffled)
    assert sorted(chosen_ids(shuffled, 2, seed=42)) == sorted(ids) and chosen_ids(examples, 2, seed=42) == ids
    assert chosen_ids(examples, 2, seed=7) != ids
    # A limit no task type reaches is the whole split.
    assert chosen_ids(examples, 10, seed=42) is None and chosen_ids(examples, None, seed=42) is None


def test_stage2_conversations_are_taken_whole_until_every_task_type_has_n():
    conversations = [example(i, *random.Random(i).choices(["planning", "success", "affordance", "rare"], weights=[6, 3, 3, 0.3], k=4)) for i in range(40)]
    available = Counter(info.task_type for c in conversations for info in c.turn_info)
    assert available["rare"] >= 1
    ids = chosen_ids(conversations, 3, seed=42)
    picked = Counter(info.task_type for c in conversations if c.id in ids for info in c.turn_info)
    assert all(picked[task] >= min(3, count) for task, count in available.items())
    assert len(ids) < len(conversations) // 2


@pytest.mark.slow
def test_checkpoints_evaluate_the_subset_and_the_last_step_the_whole_split(processed_data, vlmft_home, tmp_path):
    flags = {"data": processed_data, "out": tmp_path, "home": vlmft_home, "global_batch_size": 4, "max_steps": 2, "save_steps": 1, "dataloader_workers": 0, "learning_rate": 1e-3, "eval_limit": 1}
    result = train(TrainRequest(settings=SettingsInput(stage=1, profile="cpu", flags=flags, environ={})))
    assert result.status == "finished"
    task_types = split_task_types(processed_data, 1)
    with (result.run_dir / "logs" / "eval_metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # One QA of every task type at each checkpoint; the whole split once more at the last step.
    assert [(int(r["step"]), r["eval_set"], int(r["qas"])) for r in rows] == [(1, "subset", len(set(task_types))), (2, "subset", len(set(task_types))), (2, "full", len(task_types))]
    assert result.eval_metrics["samples"] == len(task_types)
    # Checkpoints are compared on the same QAs: the marker records the subset's loss.
    checkpoint = {c.step: c for c in runs.Run(result.run_dir).good_checkpoints()}
    assert checkpoint[2].eval_loss == pytest.approx(float(rows[1]["loss"]), rel=1e-6) != pytest.approx(float(rows[2]["loss"]), rel=1e-6)
    # `vlmft eval --eval-limit 1` evaluates the very QAs the checkpoint did; without it, the whole split.
    common = {"data": processed_data, "stage": 1, "runs_dir": tmp_path, "home": vlmft_home}
    report = evaluate_checkpoint(EvalRequest(checkpoint=str(checkpoint[1].path), eval_limit=1, **common))
    subset = report.metrics
    assert report.output_dir == result.run_dir / "eval" / "stage1-val-step1-subset1"
    assert subset["overall"]["qas"] == len(set(task_types)) and subset["eval_set"]["eval_limit"] == 1
    assert subset["overall"]["loss"] == pytest.approx(float(rows[0]["loss"]), rel=TOLERANCE)
    full = evaluate_checkpoint(EvalRequest(checkpoint=str(checkpoint[2].path), **common)).metrics
    assert full["overall"]["qas"] == len(task_types) and full["eval_set"]["packed"] is True
    assert full["overall"]["loss"] == pytest.approx(float(rows[2]["loss"]), rel=TOLERANCE)


def test_limit_and_eval_limit_together_are_refused(processed_data, vlmft_home, tmp_path):
    from vlmft_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="not both"):
        evaluate_checkpoint(EvalRequest(data=processed_data, model="tiny-internvl3", limit=3, eval_limit=1, runs_dir=tmp_path, home=vlmft_home))
    with pytest.raises(ConfigError, match="--eval-limit must be at least 1"):
        evaluate_checkpoint(EvalRequest(data=processed_data, model="tiny-internvl3", eval_limit=0, runs_dir=tmp_path, home=vlmft_home))


# --- 4. per-task counts of `vlmft eval --generate` add up to the split --------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2])
def test_eval_generate_per_task_counts_add_up_to_the_split(stage, stage1_run, processed_data, vlmft_home, monkeypatch):
    import typer

    from vlmft_cli.cli import eval_cmd
    from vlmft_cli.cli.app import VlmftGroup

    root = typer.Typer(cls=VlmftGroup)
    root.callback()(lambda: None)
    root.add_typer(eval_cmd.app)
    monkeypatch.setenv("VLMFT_HOME", str(vlmft_home))
    out, result = stage1_run
    folder = out / f"counts-stage{stage}"
    args = ["eval", "--checkpoint", str(result.last_checkpoint), "--stage", str(stage), "--data", str(processed_data), "--generate", "--max-new-tokens", "2", "--batch-size", "3", "--out", str(folder), "--runs-dir", str(out), "--json"]
    invoked = CliRunner().invoke(root, args)
    assert invoked.exit_code == 0, invoked.output
    metrics = json.loads(invoked.stdout)["metrics"]
    task_types = split_task_types(processed_data, stage)
    assert sum(group["qas"] for group in metrics["per_task"].values()) == metrics["overall"]["qas"] == len(task_types)
    assert len(jsonl(folder / "predictions.jsonl")) == len(task_types)
    if stage == 2:
        assert sum(group["qas"] for group in metrics["per_turn"].values()) == len(task_types)

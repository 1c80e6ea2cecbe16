"""Deep verification names each kind of damage and never unpickles anything but tensor state."""

import os
import pickle

import pytest

from ckpt.fabricate import add_checkpoint
from vlmft_cli.ckpt.verify import checkpoint_at, checkpoints_to_verify, verify_checkpoint
from vlmft_cli.errors import CheckpointError
from vlmft_cli.fsutil import atomic_write_json
from vlmft_cli.runs import MARKER_FILE, Checkpoint, write_marker


class _Trap:
    """Unpickling this creates the file at `path`; a safe loader must refuse it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.fixture
def checkpoint(tmp_path, make_run) -> Checkpoint:
    run = make_run(tmp_path / "out", steps=(10,), eval_losses={10: 1.0})
    return run.checkpoints()[0]


def _remark(checkpoint: Checkpoint) -> None:
    write_marker(checkpoint.path, checkpoint.step)


def test_a_sound_checkpoint_passes_every_check(checkpoint):
    result = verify_checkpoint(checkpoint)
    assert result.ok, result.problem
    text = "\n".join(result.checks)
    for expected in ("sizes and sha256", "required files present", "adapter_model.safetensors: ", "tensors parsed",
                     "adapter_config.json: valid JSON", "optimizer.pt: loads with weights_only=True",
                     "scheduler.pt: loads", "rng_state.pth: loads", "trainer_state.json: valid JSON"):  # fmt: skip
        assert expected in text
    assert result.notes == []


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        pytest.param(lambda c: (c.path / MARKER_FILE).unlink(), "no completion marker", id="no-marker"),
        pytest.param(lambda c: atomic_write_json(c.marker_path, {"step": 10, "complete": True, "files": {}}), "lists no files", id="marker-without-files"),
        pytest.param(lambda c: (c.path / "adapter_model.safetensors").unlink(), "adapter_model.safetensors is listed in the marker but missing", id="deleted-file"),
        pytest.param(lambda c: (c.path / "optimizer.pt").unlink(), "optimizer.pt is listed in the marker but missing", id="deleted-optimizer"),
        pytest.param(lambda c: ((c.path / "optimizer.pt").unlink(), _remark(c)), "optimizer.pt missing: a checkpoint needs", id="never-saved-optimizer"),
        pytest.param(lambda c: os.truncate(c.path / "adapter_model.safetensors", 100), "has 100 bytes, the marker says", id="truncated"),
        pytest.param(lambda c: (os.truncate(c.path / "adapter_model.safetensors", 100), _remark(c)), "not a readable safetensors file", id="truncated-remarked"),
        pytest.param(lambda c: _flip_last_byte(c.path / "scheduler.pt"), "scheduler.pt does not match its sha256", id="flipped-byte"),
        pytest.param(lambda c: ((c.path / "adapter_config.json").write_text("{not json"), _remark(c)), "adapter_config.json is not valid JSON", id="bad-json"),
        pytest.param(lambda c: ((c.path / "adapter_config.json").write_text("{}"), _remark(c)), "not a PEFT adapter config", id="not-peft"),
        pytest.param(lambda c: ((c.path / "optimizer.pt").write_bytes(b"garbage"), _remark(c)), "optimizer.pt does not load with torch.load(weights_only=True)", id="bad-optimizer"),
        pytest.param(lambda c: atomic_write_json(c.marker_path, {**c.marker(), "step": 11}), "says step 11 but the folder is step 10", id="wrong-step"),
    ],
)
def test_damage_is_named(checkpoint, damage, problem):
    damage(checkpoint)
    result = verify_checkpoint(checkpoint)
    assert not result.ok
    assert problem in result.problem


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_malicious_optimizer_pickle_is_refused_not_run(checkpoint, tmp_path):
    sentinel = tmp_path / "pwned"
    (checkpoint.path / "optimizer.pt").write_bytes(pickle.dumps({"state": _Trap(sentinel)}))
    _remark(checkpoint)
    result = verify_checkpoint(checkpoint)
    assert "optimizer.pt does not load with torch.load(weights_only=True)" in result.problem
    assert not sentinel.exists()


def test_training_args_are_hash_checked_but_never_unpickled(checkpoint, tmp_path):
    sentinel = tmp_path / "pwned"
    (checkpoint.path / "training_args.bin").write_bytes(pickle.dumps(_Trap(sentinel)))
    _remark(checkpoint)
    result = verify_checkpoint(checkpoint)
    assert result.ok, result.problem
    assert any("training_args.bin: hash checked, not unpickled" in note for note in result.notes)
    assert not sentinel.exists()


def test_files_written_after_the_marker_are_noted(checkpoint):
    (checkpoint.path / "late.txt").write_text("x")
    result = verify_checkpoint(checkpoint)
    assert result.ok and "late.txt" in result.notes[0]


def test_what_a_reference_resolves_to(tmp_path, make_run, adapter_template):
    out = tmp_path / "out"
    old = make_run(out, "demo", (10, 20), stamp="20260101-120000")
    new = make_run(out, "demo", (5,), stamp="20260102-120000")
    add_checkpoint(new, 6, adapter_template.folder, marker=False)
    assert checkpoints_to_verify(out, "latest") == [new.checkpoints()[0]]  # the broken step 6 is skipped
    assert [c.step for c in checkpoints_to_verify(out, str(old.path))] == [10, 20]
    assert [c.step for c in checkpoints_to_verify(out, "demo")] == [5, 6]  # newest run of the experiment, all of it
    assert checkpoints_to_verify(out, str(new.checkpoints_dir / "checkpoint-6")) == [Checkpoint(new.checkpoints_dir / "checkpoint-6", 6)]
    with pytest.raises(CheckpointError, match="no run 'nope'"):
        checkpoints_to_verify(out, "nope")


def test_a_renamed_checkpoint_folder_takes_its_step_from_the_marker(checkpoint, tmp_path):
    moved = tmp_path / "kept-aside"
    checkpoint.path.rename(moved)
    assert checkpoint_at(moved) == Checkpoint(moved, 10)
    assert verify_checkpoint(checkpoint_at(moved)).ok
    (moved / MARKER_FILE).unlink()
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        checkpoint_at(moved)

"""Dataloader workers and signals, on a bare DataLoader in a subprocess (no model): workers started with
`QuietWorkerInit` survive a SIGTERM or SIGINT (the main process decides how to stop), still seed as the
Trainer does, and a process that leaves with an exception while they run exits instead of waiting on
them forever."""

import ast
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # each case starts Python with torch in a subprocess

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from functools import partial
    import torch
    from transformers.trainer_utils import seed_worker
    from vlmft_cli.pipeline.dataset import QuietWorkerInit

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 12
        def __getitem__(self, index):
            time.sleep(0.2)
            return os.getpid(), torch.initial_seed(), int(torch.randint(0, 10**9, ()))

    quiet = sys.argv[1] == "quiet"
    seeding = partial(seed_worker, num_workers=2, rank=0)
    loader = torch.utils.data.DataLoader(Slow(), batch_size=None, num_workers=2, worker_init_fn=QuietWorkerInit(seeding) if quiet else seeding)
    items = iter(loader)
    first = [next(items), next(items)]
    for pid in {pid for pid, _, _ in first}:
        os.kill(pid, signal.SIGTERM if sys.argv[2] == "term" else signal.SIGINT)
    time.sleep(0.5)
    if sys.argv[3] == "raise":
        raise RuntimeError("leaving with the loader still iterating")
    rest = list(items)
    print("items", len(first) + len(rest), "seeds", sorted({seed for _, seed, _ in first + rest}))
    """
)


def run(*args, timeout=60):
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=timeout)


def test_quiet_workers_survive_sigterm_and_sigint_and_still_seed():
    for sig in ("term", "int"):
        quiet = run("quiet", sig, "iterate")
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stdout.startswith("items 12 seeds") and len(ast.literal_eval(quiet.stdout.split("seeds ")[1])) == 2  # one seed per worker
    killed = run("plain", "term", "iterate")  # what happened before: the loader dies with its worker
    assert killed.returncode != 0 and "DataLoader worker" in killed.stderr


def test_leaving_with_an_exception_while_quiet_workers_run_exits():
    left = run("quiet", "term", "raise", timeout=60)  # a hang here would be a TimeoutExpired
    assert left.returncode == 1 and "leaving with the loader still iterating" in left.stderr

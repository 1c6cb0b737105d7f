"""Fault injection on the real dsprites/train.py: SIGKILL at random points in every phase and in
the middle of checkpoint writing, then --resume; the result must equal an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests import scripts
from tests.scripts import REPO, tiny

pytestmark = pytest.mark.runs  # trains whole runs: scheduled first (tests/conftest.py)

SCRIPT = scripts.script("dsprites")


def run(args):
    return scripts.run("dsprites", args)

# Runs train.py with one fault armed: the process SIGKILLs itself at its (after+1)-th optimiser
# step ("step"), or at the chosen point of its (after+1)-th checkpoint write. The training code
# itself is untouched.
WRAPPER = """
import os, runpy, signal, sys
import common.checkpoint as ck
point, after = os.environ["FAULT_POINT"], int(os.environ["FAULT_AFTER"])
calls = {"n": 0}
def armed():
    calls["n"] += 1
    return calls["n"] > after
if point == "step":
    import torch
    real_step = torch.optim.Adam.step
    def step(self, *args, **kwargs):
        if armed():
            os.kill(os.getpid(), signal.SIGKILL)
        return real_step(self, *args, **kwargs)
    torch.optim.Adam.step = step
elif point == "disk_full":
    import errno
    real_save = ck.torch.save
    def save(obj, handle, *args, **kwargs):
        if armed():
            handle.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device", handle.name)
        return real_save(obj, handle, *args, **kwargs)
    ck.torch.save = save
elif point == "mid_write":
    real_save = ck.torch.save
    def save(obj, handle, *args, **kwargs):
        if armed():
            handle.write(b"PK\\x03\\x04 half a checkpoint")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, handle, *args, **kwargs)
    ck.torch.save = save
else:
    real_replace = ck.os.replace
    def replace(src, dst):
        if str(dst).endswith("checkpoint.pt") and armed():
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)
    ck.os.replace = replace
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "wall_time_s"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    result = run(tiny(tmp, "reference"))
    assert result.returncode == 0, result.stderr
    return comparable(json.loads((tmp / "runs" / "reference" / "metrics.json").read_text()))


def run_with_fault(tmp_path, point, after, args):
    env = {**os.environ, "FAULT_POINT": point, "FAULT_AFTER": str(after)}
    return subprocess.run([sys.executable, "-c", WRAPPER, str(SCRIPT), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


# The tiny run: 8 training steps per epoch; an optimiser step is 2 Adam calls in the warm-up
# (discriminator, autoencoder) and 4 in the relational phase (+ 2 ReL updates).
WARMUP_CALLS, RELATIONAL_CALLS = 8 * 2, 8 * 4


@pytest.mark.parametrize("seed", [0, 1])  # and tests/test_train.py kills inside epochs
def test_random_kills_in_every_phase_lose_nothing(tmp_path, reference, seed):
    rng = random.Random(seed)
    run_dir = tmp_path / "runs" / "victim"
    # 1) killed during the warm-up epoch: nothing finished yet.
    killed = run_with_fault(tmp_path, "step", rng.randrange(WARMUP_CALLS),
                            tiny(tmp_path, "victim"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run_dir / "checkpoint.pt").exists()
    # 2) resumed (from scratch), killed in the first relational epoch.
    killed = run_with_fault(tmp_path, "step",
                            WARMUP_CALLS + rng.randrange(RELATIONAL_CALLS),
                            ["--resume", str(run_dir)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1
    # 3) resumed from epoch 1, killed in the last relational epoch.
    killed = run_with_fault(tmp_path, "step", RELATIONAL_CALLS + rng.randrange(RELATIONAL_CALLS),
                            ["--resume", str(run_dir)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not (run_dir / "metrics.json").exists()

    final = run(["--resume", str(run_dir)])
    assert final.returncode == 0, final.stderr
    assert comparable(json.loads((run_dir / "metrics.json").read_text())) == reference
    assert [r.split(",")[0] for r in (run_dir / "metrics.csv").read_text().splitlines()] == \
        ["epoch", "1", "2", "3"]


def test_kill_during_final_evaluation_resumes_to_the_same_result(tmp_path, reference):
    run_dir = tmp_path / "runs" / "victim"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *tiny(tmp_path, "victim")], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if (run_dir / "checkpoint.pt").exists() and \
                torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 3:
            break  # training done: now evaluating and drawing
        time.sleep(0.01)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = run(["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(json.loads((run_dir / "metrics.json").read_text())) == reference


@pytest.mark.parametrize("point", ["mid_write", "before_rename"])
def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, reference, point):
    run_dir = tmp_path / "runs" / "victim"
    proc = run_with_fault(tmp_path, point, 1, tiny(tmp_path, "victim"))  # dies writing epoch 2's
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1  # the half-written epoch-2 checkpoint was never swapped in
    resumed = run(["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(json.loads((run_dir / "metrics.json").read_text())) == reference
    assert not list(run_dir.glob(".*.tmp"))  # leftovers of the killed write are cleaned up


def test_disk_full_while_checkpointing_stops_cleanly_and_resumes(tmp_path, reference):
    run_dir = tmp_path / "runs" / "victim"
    proc = run_with_fault(tmp_path, "disk_full", 1, tiny(tmp_path, "victim"))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "No space left on device" in last and "--resume" in last, last
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(run_dir.glob(".*.tmp"))  # the failed write removed its temporary file
    resumed = run(["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(json.loads((run_dir / "metrics.json").read_text())) == reference

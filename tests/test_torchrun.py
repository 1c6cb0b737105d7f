"""The same train.py under torchrun (2 CPU processes, gloo) matches one process with the same
global batch: every rank draws the global batch's randomness and keeps its slice, gradients are
averaged, so only the order of floating-point sums differs; batch normalisation uses the global
batch's statistics."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from common import distributed
from tests import scripts
from tests.scripts import FOLDERS, REPO, tiny

pytestmark = pytest.mark.runs  # trains whole runs: scheduled first (tests/conftest.py)

SCRIPT = scripts.script("dsprites")


def run(args):
    return scripts.run("dsprites", args)

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists() and not shutil.which("torchrun"),
                    reason="torchrun not installed")
def test_two_processes_match_one(tmp_path):
    # fp32: bf16 rounding (3 significant digits) would hide a wrong reduction in its noise
    # model.norm=none: CPU batch normalisation on channels-last inputs is off by about 3e-4,
    # which the adversarial training amplifies (the next test checks the synchronised one)
    single = run([*tiny(tmp_path, "one"), "run.threads=1", "train.amp=off", "model.norm=none"])
    assert single.returncode == 0, single.stderr
    assert "training forward passes in fp32 (train.amp=off)" in single.stderr
    launcher = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    double = subprocess.run(
        [launcher, "--standalone", "--nproc_per_node=2", str(SCRIPT),
         *tiny(tmp_path, "two"), "run.threads=1", "train.amp=off", "model.norm=none"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert double.returncode == 0, double.stderr
    assert Path(double.stdout.strip().splitlines()[-1]) == tmp_path / "runs" / "two"
    assert not (tmp_path / "runs" / "two-1").exists()  # one run folder, written by rank 0

    def rows(name):
        with open(tmp_path / "runs" / name / "metrics.csv") as handle:
            return list(csv.DictReader(handle))

    one, two = rows("one"), rows("two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        for key in ("train/recon", "train/disc", "train/gen", "train/rel", "val/recon_loss",
                    "val/min_separation"):
            if a[key]:
                assert float(b[key]) == pytest.approx(float(a[key]), rel=2e-3), key
    m1 = json.loads((tmp_path / "runs" / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "runs" / "two" / "metrics.json").read_text())
    assert m2["test/recon_loss"] == pytest.approx(m1["test/recon_loss"], rel=1e-3)
    for key in m1:
        if key.startswith("test/") and ("acc" in key or "accept" in key):
            assert abs(m1[key] - m2[key]) <= 0.02, key


def _tiny_data(folder, tmp_path):
    """(the folder's train module, its tiny config with model.norm=batch, its tiny data)."""
    train = scripts.module(folder, "train")
    cfg = scripts.tiny_config(folder, tmp_path, "run.device=cpu", "model.norm=batch")
    return train, cfg, train.dataset.load_data(cfg, "cpu", REPO)


def _synchronised_worker(rank, world, tmp_path):
    """One of `world` gloo processes: GlobalBatchNorm2d against float64 batch normalisation of
    the whole batch, then every folder's build_state with model.norm=batch. Each stage it
    reaches goes to stderr, which pytest shows when the test fails."""

    def reached(stage):
        print(f"rank {rank}: {stage}", file=sys.stderr, flush=True)

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}",
                           rank=rank, world_size=world)
    group = distributed.Group(rank=rank, world=world)
    reached("process group up")
    gen = torch.Generator().manual_seed(0)  # the same global batch on every rank
    x = (0.5 + 0.1 * torch.randn(8, 3, 6, 6, generator=gen)).to(memory_format=torch.channels_last)
    upstream = torch.randn(8, 3, 6, 6, generator=gen)
    gamma, beta = torch.randn(3, generator=gen), torch.randn(3, generator=gen)

    # the reference: one process, the whole batch, float64
    xd = x.double().requires_grad_()
    wd, bd = gamma.double().requires_grad_(), beta.double().requires_grad_()
    var, mean = torch.var_mean(xd, dim=(0, 2, 3), correction=0)
    y_ref = ((xd - mean.view(1, 3, 1, 1)) * torch.rsqrt(var.view(1, 3, 1, 1) + 1e-5)
             * wd.view(1, 3, 1, 1) + bd.view(1, 3, 1, 1))
    (y_ref * upstream).mean().backward()

    net = group.synchronise_batch_norm(nn.Sequential(nn.BatchNorm2d(3)), torch.device("cpu"))
    bn = net[0]
    assert type(bn) is distributed.GlobalBatchNorm2d
    bn.weight.data.copy_(gamma)
    bn.bias.data.copy_(beta)
    mine = group.shard(x).clone().requires_grad_()
    y = net(mine)
    (y * group.shard(upstream)).mean().backward()  # this rank's loss: the mean over its share
    group.average_gradients(net.parameters())
    close = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y.double(), group.shard(y_ref.detach()), **close)
    torch.testing.assert_close(mine.grad.double() / world, group.shard(xd.grad), **close)
    torch.testing.assert_close(bn.weight.grad.double(), wd.grad, **close)
    torch.testing.assert_close(bn.bias.grad.double(), bd.grad, **close)
    n = x.numel() // 3
    torch.testing.assert_close(bn.running_mean.double(), 0.1 * mean.detach(), **close)
    torch.testing.assert_close(bn.running_var.double(), 0.9 + 0.1 * var.detach() * n / (n - 1),
                               **close)
    net.eval()  # eval mode: the running statistics, no communication
    torch.testing.assert_close(net(mine), nn.functional.batch_norm(
        mine, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
    reached("GlobalBatchNorm2d matches float64")

    # every folder's train.py synchronises its networks: after one warm-up step on this rank's
    # share of the batch, both ranks hold the same running statistics (each would hold its
    # own half-batch's without)
    for folder in FOLDERS:
        train, cfg, data = _tiny_data(folder, tmp_path)
        state = train.build_state(cfg, data, "cpu", group)
        norms = [m for m in state.model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(type(m) is distributed.GlobalBatchNorm2d for m in norms), folder

        def statistics():
            return torch.cat([torch.cat([m.running_mean, m.running_var]) for m in norms])

        before = statistics()
        state.model.train()
        train.warmup_step(state, data, torch.arange(cfg["train"]["batch_size"]), cfg)
        stats = statistics()
        gathered = [torch.empty_like(stats) for _ in range(world)]
        dist.all_gather(gathered, stats)
        assert torch.equal(gathered[0], gathered[1]), folder
        assert not torch.equal(stats, before), folder
        reached(f"{folder} synchronised")
    dist.destroy_process_group()
    reached("done")
    # Every check above passed. Leave without interpreter finalisation: once in a CI run (not
    # in 26 runs here, alone or under load) a worker died of SIGABRT, "terminate called without
    # an active exception", with no Python error, the C++ runtime's message for a thread torn
    # down while running, which finalisation after gloo can do.
    sys.stderr.flush()
    os._exit(0)


def test_batch_norm_under_torchrun_uses_the_global_batch(tmp_path):
    """With model.norm=batch, N processes normalise by the global batch's statistics, as one
    process does: forward, gradients and running statistics of GlobalBatchNorm2d in two gloo
    processes equal float64 batch normalisation of the whole batch. (Whole runs are compared
    with model.norm=none above: CPU BatchNorm2d on channels-last inputs is itself off by about
    3e-4 from float64, which the adversarial training amplifies.)"""
    for folder in FOLDERS:  # render the tiny stand-ins once, before two processes read them
        _tiny_data(folder, tmp_path)
    torch.multiprocessing.spawn(_synchronised_worker, args=(2, tmp_path), nprocs=2)

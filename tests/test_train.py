"""Every dataset folder's real train.py, run as a user runs it on its `tiny` preset (as CleanRL's
tests run every script): a complete run and --evaluate, SIGKILL and --resume, bad input. The
folders are found by `*/train.py`, so a new one is tested without editing this file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.scripts import FOLDERS, REPO, module, run, script, tiny

PICTURES = ("training_curves.png", "latent_space.png", "traversals.png", "relation_chains.png",
            "component_samples.png", "accuracy_vs_q.png")


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "wall_time_s"}


@pytest.mark.parametrize("folder", FOLDERS)
def test_train_writes_a_complete_run_and_evaluate_reproduces_it(tmp_path, folder):
    result = run(folder, tiny(tmp_path, "full", tensorboard=True))
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir == tmp_path / "runs" / "full"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["run"]["name"] == "full" and cfg["train"]["relational_epochs"] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for q in cfg["eval"]["qs"]:
        assert 0.0 <= metrics[f"test/cluster_acc@{q}"] <= 1.0
        assert 0.0 <= metrics[f"test/cluster_accept@{q}"] <= 1.0
    assert metrics["test/cluster_accept@1.0"] == 1.0
    assert metrics["test/cluster_accept@0.5"] <= metrics["test/cluster_accept@0.99"]
    for key in ("test/rel_acc_latent", "test/rel_accept_latent", "test/rel_acc_data",
                "test/rel_acc_decoded", "test/component_acc_decoded",
                "classifier/test_acc/entity", "test/mig", "test/sap", "test/dci_disentanglement",
                "test/dci_completeness", "test/dci_informativeness", "test/factor_vae",
                "test/beta_vae"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test/recon_loss"] > 0 and metrics["wall_time_s"] > 0
    entities = module(folder, "dataset").entity_space(cfg).num_entities
    assert metrics["epochs"] == 3
    assert metrics["labelled_images"] == cfg["data"]["labelled_per_entity"] * entities
    rows = (run_dir / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3  # header + one row per epoch
    for name in PICTURES:
        assert (run_dir / name).stat().st_size > 1000, name
    report = (run_dir / "report.md").read_text()
    assert "| rel_acc_decoded |" in report and "(relation_chains.png)" in report
    # With train.lr_decay_epochs every learning rate falls towards 0 over the last epochs (here
    # both relational ones: the last step runs at a quarter or less); without, they stay put.
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for opt in ("ae_opt", "disc_opt", "rel_opt"):
        for group in ckpt[opt]["param_groups"]:
            if cfg["train"]["lr_decay_epochs"]:
                assert 0 < group["lr"] <= 0.25 * group["base_lr"], opt
            else:
                assert group["lr"] == group["base_lr"], opt

    # TensorBoard: every epoch's losses, the validation metrics and the pictures at each
    # validation, matching metrics.csv
    board = EventAccumulator(str(run_dir / "tensorboard"))
    board.Reload()
    assert [e.step for e in board.Scalars("train/recon")] == [1, 2, 3]
    val = board.Scalars("val/cluster_acc@0.99")
    assert [e.step for e in val] == [2, 3]
    last_row = rows[-1].split(",")
    header = rows[0].split(",")
    assert val[-1].value == pytest.approx(float(last_row[header.index("val/cluster_acc@0.99")]),
                                          abs=1e-6)
    assert "val/rel_acc_data" in board.Tags()["scalars"]
    assert [e.step for e in board.Images("relation_chains")] == [2, 3]

    again = run(folder, ["--evaluate", str(run_dir)])
    assert again.returncode == 0, again.stderr
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics


@pytest.mark.parametrize("folder", FOLDERS)
def test_killed_run_resumes_to_the_same_result(tmp_path, folder):
    reference = run(folder, tiny(tmp_path, "reference", epochs=(1, 1)))
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "runs" / "reference" / "metrics.json").read_text())

    # the killed run writes TensorBoard files too: they change no number
    proc = subprocess.Popen([sys.executable, str(script(folder)),
                             *tiny(tmp_path, "killed", epochs=(1, 1), tensorboard=True)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    csv = tmp_path / "runs" / "killed" / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if csv.exists() and len(csv.read_text().splitlines()) >= 2:  # epoch 1 done
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = tmp_path / "runs" / "killed"
    assert not (run_dir / "metrics.json").exists()

    resumed = run(folder, ["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert Path(resumed.stdout.strip().splitlines()[-1]) == run_dir
    got = json.loads((run_dir / "metrics.json").read_text())
    assert comparable(got) == comparable(expected)
    epochs = [line.split(",")[0] for line in (run_dir / "metrics.csv").read_text().splitlines()]
    assert epochs == ["epoch", "1", "2"]


# Bad input every folder must refuse (a config key, and a budget its data cannot meet); then
# what only one dataset has, and checks whose code every folder shares (tests/test_copies.py).
BAD_INPUT = [(folder, override, needle) for folder in FOLDERS for override, needle in (
    ("model.zdim=4", "did you mean 'model.z_dim'"),
    ("data.labelled_per_entity=100000", "data.labelled_per_entity"),
)] + [
    ("dsprites", "model.z_dim=ten", "model.z_dim"),
    ("dsprites", "train.warmup_epochs=-1", "train.warmup_epochs"),
    ("dsprites", "data.path=/no/such/file", "does not exist"),
    ("shapes3d", "data.path=/no/such/3dshapes.h5", "does not exist"),
    ("mpi3d", "data.variant=complex", "no procedural stand-in"),
    ("mpi3d", "data.variant=toys", "data.variant must be one of toy, realistic, real, complex"),
    ("mpi3d", "entities.bins.object_color=[[0],[6]]", "object_color"),
    ("shapes3d", "data.nuisances.floor_hue=[10]", "data.nuisances.floor_hue index 10"),
    ("shapes3d", "train.rel_loss=l2", "train.rel_loss must be one of mse, nll, xent"),
]


@pytest.mark.parametrize("folder, override, needle", BAD_INPUT)
def test_bad_input_stops_at_once_with_one_clear_line(tmp_path, folder, override, needle):
    result = run(folder, [*tiny(tmp_path, "bad"), override])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()  # a stand-in's render may say so first
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]] and needle in lines[-1], lines
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "bad").exists()


# ---------------------------------------------------------------- one folder suffices
# The loop, checkpointing and command line are the same code in every folder
# (tests/test_copies.py), so what follows runs on dSprites, the fastest.


def test_wrong_file_layout_is_refused(tmp_path):
    bad = tmp_path / "wrong.npz"
    np.savez(bad, images=np.zeros((4, 64, 64), np.uint8))
    result = run("dsprites", [*tiny(tmp_path, "bad"), f"data.path={bad}"])
    assert result.returncode == 2 and "latents_classes" in result.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_mpi3d_file_of_the_wrong_variant_is_refused_before_a_run_folder_exists(tmp_path):
    dataset = module("mpi3d", "dataset")
    wrong = tmp_path / "mpi3d_toy.npz"  # a full-size complex-variant file, sparse on disk
    dataset.write_sparse_npz(wrong, dataset.num_images("complex"), np.zeros(0, np.int64),
                             np.zeros((0, 64, 64, 3), np.uint8))
    result = run("mpi3d", [*tiny(tmp_path, "bad"), f"data.path={wrong}"])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "460800" in lines[0] and "1036800" in lines[0], lines
    assert not (tmp_path / "runs" / "bad").exists()


def test_existing_run_folder_is_never_overwritten(tmp_path):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "keep.txt").write_text("precious")
    result = run("dsprites", tiny(tmp_path, "taken"))
    assert result.returncode == 2 and "--resume" in result.stderr
    assert (tmp_path / "runs" / "taken" / "keep.txt").read_text() == "precious"


def test_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    # One healthy warm-up epoch, then a supervised weight that overflows the relational loss.
    result = run("dsprites", [*tiny(tmp_path, "nan", epochs=(1, 2)), "train.sup_weight=1e38"])
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "training diverged" in last and "epoch 2" in last and "step" in last, last
    checkpoint = torch.load(tmp_path / "runs" / "nan" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


def test_gpu_path_switches_bf16_and_compile_run_and_checkpoint_portably(tmp_path):
    result = run("dsprites", [*tiny(tmp_path, "fast", epochs=(1, 1)), "train.amp=bf16",
                              "train.compile=true", "train.channels_last=true"])
    assert result.returncode == 0, result.stderr
    assert "training forward passes in bf16 autocast (train.amp=bf16)" in result.stderr
    run_dir = tmp_path / "runs" / "fast"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["test/recon_loss"] < 5000
    keys = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"].keys()
    assert not any("_orig_mod" in k for k in keys)  # loads into an uncompiled model

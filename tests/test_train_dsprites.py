"""The real dsprites/train.py, run as a user runs it, on a tiny config (as CleanRL's tests do)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "dsprites" / "train.py"
PICTURES = ("training_curves.png", "latent_space.png", "traversals.png", "relation_chains.png",
            "component_samples.png", "accuracy_vs_q.png")


def tiny(tmp_path, name, epochs=(1, 2)):
    """675 images (one scale, one orientation), small networks, a few seconds per epoch."""
    return [
        f"run.root={tmp_path / 'runs'}", f"run.name={name}", "run.eval_every=1",
        "run.device=cpu", f"data.cache_dir={tmp_path / 'cache'}",
        "data.nuisances.scale=[3]", "data.nuisances.orientation=[0]",
        "data.labelled_per_entity=5", "data.noise_prob=0.5", "data.mask_prob=0.5",
        "model.channels=[8,8,16,16]", "model.hidden=64", "model.disc_hidden=64",
        "model.rel_hidden=64", "train.batch_size=64", "train.labelled_batch_size=16",
        "train.rel_batch_size=128", f"train.warmup_epochs={epochs[0]}",
        f"train.relational_epochs={epochs[1]}", "eval.rel_samples=5",
        "eval.classifier_steps=50",
    ]


def run(args, **kwargs):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, **kwargs)


def test_train_writes_a_complete_run(tmp_path):
    result = run(tiny(tmp_path, "full"))
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir == tmp_path / "runs" / "full"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for q in (0.5, 0.9, 0.99, 0.999, 1.0):
        assert 0.0 <= metrics[f"test/cluster_acc@{q}"] <= 1.0
        assert 0.0 <= metrics[f"test/cluster_accept@{q}"] <= 1.0
    assert metrics["test/cluster_accept@1.0"] == 1.0
    assert metrics["test/cluster_accept@0.5"] <= metrics["test/cluster_accept@0.99"]
    for key in ("test/rel_acc_latent", "test/rel_accept_latent", "test/rel_acc_data"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["test/recon_loss"] > 0 and metrics["wall_time_s"] > 0
    for key in ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness",
                "factor_vae", "beta_vae"):
        assert 0.0 <= metrics[f"test/{key}"] <= 1.0, key
    assert metrics["labelled_images"] == 27 * 5 and metrics["epochs"] == 3
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["labelled_per_entity"] == 5
    rows = (run_dir / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3  # header + one row per epoch
    for name in PICTURES:
        assert (run_dir / name).stat().st_size > 1000, name

    again = run(["--evaluate", str(run_dir)])
    assert again.returncode == 0, again.stderr
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics


def test_killed_run_resumes_to_the_same_result(tmp_path):
    reference = run(tiny(tmp_path, "reference"))
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "runs" / "reference" / "metrics.json").read_text())

    proc = subprocess.Popen([sys.executable, str(SCRIPT), *tiny(tmp_path, "killed")], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    csv = tmp_path / "runs" / "killed" / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if csv.exists() and len(csv.read_text().splitlines()) >= 2:  # epoch 1 done
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = tmp_path / "runs" / "killed"
    assert not (run_dir / "metrics.json").exists()

    resumed = run(["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert Path(resumed.stdout.strip().splitlines()[-1]) == run_dir
    got = json.loads((run_dir / "metrics.json").read_text())
    same = {k: v for k, v in got.items() if k != "wall_time_s"}
    assert same == {k: v for k, v in expected.items() if k != "wall_time_s"}
    epochs = [line.split(",")[0] for line in (run_dir / "metrics.csv").read_text().splitlines()]
    assert epochs == ["epoch", "1", "2", "3"]


@pytest.mark.parametrize("override, needle", [
    ("data.path=/no/such/file.npz", "does not exist"),
    ("model.z_dim=ten", "model.z_dim"),
    ("model.zdim=4", "did you mean 'model.z_dim'"),
    ("train.warmup_epochs=-1", "train.warmup_epochs"),
    ("data.labelled_per_entity=100000", "data.labelled_per_entity"),
])
def test_bad_input_stops_at_once_with_one_clear_line(tmp_path, override, needle):
    result = run([*tiny(tmp_path, "bad"), override])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_wrong_file_layout_is_refused(tmp_path):
    import numpy as np

    bad = tmp_path / "wrong.npz"
    np.savez(bad, images=np.zeros((4, 64, 64), np.uint8))
    result = run([*tiny(tmp_path, "bad"), f"data.path={bad}"])
    assert result.returncode == 2 and "latents_classes" in result.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_existing_run_folder_is_never_overwritten(tmp_path):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "keep.txt").write_text("precious")
    result = run(tiny(tmp_path, "taken"))
    assert result.returncode == 2 and "--resume" in result.stderr
    assert (tmp_path / "runs" / "taken" / "keep.txt").read_text() == "precious"


def test_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    # One healthy warm-up epoch, then a supervised weight that overflows the relational loss.
    result = run([*tiny(tmp_path, "nan", epochs=(1, 2)), "train.sup_weight=1e38"])
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "training diverged" in last and "epoch 2" in last and "step" in last, last
    import torch

    checkpoint = torch.load(tmp_path / "runs" / "nan" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


def test_gpu_path_switches_bf16_and_compile_run_and_checkpoint_portably(tmp_path):
    result = run([*tiny(tmp_path, "fast", epochs=(1, 1)), "train.amp=bf16",
                  "train.compile=true", "train.channels_last=true"])
    assert result.returncode == 0, result.stderr
    assert "training forward passes in bf16 autocast (train.amp=bf16)" in result.stderr
    run_dir = tmp_path / "runs" / "fast"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["test/recon_loss"] < 5000
    import torch

    keys = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"].keys()
    assert not any("_orig_mod" in k for k in keys)  # loads into an uncompiled model

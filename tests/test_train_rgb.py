"""The real shapes3d/train.py and mpi3d/train.py, run as a user runs them, on tiny subsets of
their procedural stand-ins: a complete run, --evaluate, SIGKILL + --resume, and refused files.
The training loop is common/training.py, exercised in depth by the dSprites tests; these check
that each folder wires its own data, networks and pictures into it."""

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

REPO = Path(__file__).resolve().parents[1]

# A few entities and nuisance values each: 8-12 entities, about a hundred pictures.
SUBSETS = {
    "mpi3d": ["entities.bins.object_color=[[0],[1]]", "entities.bins.object_shape=[[0],[1],[5]]",
              "data.nuisances.camera_height=[0]", "data.nuisances.background_color=[0,1]",
              "data.nuisances.horizontal_axis=[0,20]", "data.nuisances.vertical_axis=[0,20]"],
    "shapes3d": ["entities.bins.object_hue=[[0],[5]]", "entities.bins.shape=[[0],[2]]",
                 "entities.bins.scale=[[0],[7]]", "data.nuisances.floor_hue=[0,5]",
                 "data.nuisances.wall_hue=[1,6]", "data.nuisances.orientation=[0,14]"],
}
ENTITIES = {"mpi3d": 12, "shapes3d": 8}
PICTURES = ("training_curves.png", "latent_space.png", "traversals.png", "relation_chains.png",
            "component_samples.png", "accuracy_vs_q.png")


def tiny(dataset, tmp_path, name, epochs=(1, 2)):
    return [
        f"run.root={tmp_path / 'runs'}", f"run.name={name}", "run.eval_every=1",
        "run.device=cpu", f"data.cache_dir={tmp_path / 'cache'}", *SUBSETS[dataset],
        "data.labelled_per_entity=2", "data.noise_prob=0.5", "data.mask_prob=0.5",
        "model.channels=[8,8,16,16]", "model.hidden=64", "model.disc_hidden=64",
        "model.rel_hidden=64", "train.batch_size=16", "train.labelled_batch_size=8",
        "train.rel_batch_size=64", f"train.warmup_epochs={epochs[0]}",
        f"train.relational_epochs={epochs[1]}", "eval.rel_samples=5",
        "eval.classifier_steps=30",
    ]


def run(dataset, args):
    return subprocess.run([sys.executable, str(REPO / dataset / "train.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.mark.parametrize("dataset", ["shapes3d", "mpi3d"])
def test_train_writes_a_complete_run_and_evaluate_reproduces_it(tmp_path, dataset):
    result = run(dataset, tiny(dataset, tmp_path, "full"))
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir == tmp_path / "runs" / "full"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["labelled_images"] == 2 * ENTITIES[dataset]
    for key in ("test/cluster_acc@0.99", "test/rel_acc_latent", "test/rel_acc_data",
                "test/rel_acc_decoded", "test/component_acc_decoded", "test/mig",
                "classifier/test_acc/entity"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test/cluster_accept@1.0"] == 1.0
    for name in PICTURES:
        assert (run_dir / name).stat().st_size > 1000, name
    report = (run_dir / "report.md").read_text()
    assert "| rel_acc_decoded |" in report and "(relation_chains.png)" in report
    assert json.loads((run_dir / "config.json").read_text())["run"]["name"] == "full"
    # MPI3D's default lets every learning rate fall to 0 over the last relational epochs
    # (here both: the last step runs at a quarter or less); Shapes3D's keeps them constant
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for opt in ("ae_opt", "disc_opt", "rel_opt"):
        for group in ckpt[opt]["param_groups"]:
            if dataset == "mpi3d":
                assert 0 < group["lr"] <= 0.25 * group["base_lr"], opt
            else:
                assert group["lr"] == group["base_lr"], opt

    again = run(dataset, ["--evaluate", str(run_dir)])
    assert again.returncode == 0, again.stderr
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics


@pytest.mark.parametrize("dataset", ["shapes3d", "mpi3d"])
def test_killed_run_resumes_to_the_same_result(tmp_path, dataset):
    reference = run(dataset, tiny(dataset, tmp_path, "reference", epochs=(1, 1)))
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "runs" / "reference" / "metrics.json").read_text())

    proc = subprocess.Popen([sys.executable, str(REPO / dataset / "train.py"),
                             *tiny(dataset, tmp_path, "killed", epochs=(1, 1))], cwd=REPO,
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
    resumed = run(dataset, ["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    got = json.loads((run_dir / "metrics.json").read_text())
    drop = ("wall_time_s",)
    assert ({k: v for k, v in got.items() if k not in drop}
            == {k: v for k, v in expected.items() if k not in drop})


def test_mpi3d_file_of_the_wrong_variant_is_refused_before_a_run_folder_exists(tmp_path):
    from mpi3d import dataset as ds

    wrong = tmp_path / "mpi3d_toy.npz"  # a full-size complex-variant file, sparse on disk
    ds.write_sparse_npz(wrong, ds.num_images("complex"), np.zeros(0, np.int64),
                        np.zeros((0, 64, 64, 3), np.uint8))
    result = run("mpi3d", [*tiny("mpi3d", tmp_path, "bad"), f"data.path={wrong}"])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "460800" in lines[0] and "1036800" in lines[0], lines
    assert not (tmp_path / "runs" / "bad").exists()


@pytest.mark.parametrize("dataset, override, needle", [
    ("mpi3d", "data.variant=complex", "no procedural stand-in"),
    ("mpi3d", "data.variant=toys", "data.variant must be one of toy, realistic, real, complex"),
    ("mpi3d", "entities.bins.object_color=[[0],[6]]", "object_color"),
    ("shapes3d", "data.nuisances.floor_hue=[10]", "data.nuisances.floor_hue index 10"),
    ("shapes3d", "data.path=/no/such/3dshapes.h5", "does not exist"),
    ("shapes3d", "train.rel_loss=l2", "train.rel_loss must be one of mse, nll, xent"),
])
def test_bad_input_stops_at_once_with_one_clear_line(tmp_path, dataset, override, needle):
    result = run(dataset, [*tiny(dataset, tmp_path, "bad"), override])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not (tmp_path / "runs" / "bad").exists()

"""Every dataset folder's real train.py, run as a user runs it on its `tiny` preset (as CleanRL's
tests run every script): a complete run and --evaluate, SIGKILL and --resume, bad input. The
folders are found by `*/train.py`, so a new one is tested without editing this file."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.scripts import FOLDERS, REPO, module, run, script, tiny, tiny_config
from tests.test_config import METHOD_REJECTS

pytestmark = pytest.mark.runs  # trains whole runs: scheduled first (tests/conftest.py)

PICTURES = ("training_curves.png", "latent_space.png", "traversals.png", "relation_chains.png",
            "component_samples.png", "accuracy_vs_q.png", "within_entity.png")


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
    # decoded.npz: what the decoded metrics read, for other judges (evaluation.save_decoded)
    saved = np.load(run_dir / "decoded.npz")
    space = module(folder, "dataset").entity_space(cfg)
    n = len(saved["index"])
    assert 0 < n <= 2000
    assert saved["images"].shape == saved["recon"].shape == (n, 64, 64, saved["images"].shape[3])
    assert saved["moved"].shape == (len(space.relation_names), *saved["images"].shape)
    assert all(saved[k].dtype == np.uint8 for k in ("images", "recon", "moved"))
    assert np.array_equal(saved["entities"], space.entity_ids(saved["classes"]))
    assert np.array_equal(saved["targets"], space.table[:, saved["entities"]])
    assert list(saved["relation_names"]) == list(space.relation_names)
    report = (run_dir / "report.md").read_text()
    assert "| rel_acc_decoded |" in report and "(relation_chains.png)" in report
    with open(run_dir / "metrics.csv") as f:
        last_val = [r for r in csv.DictReader(f) if r["val/cluster_acc@0.99"]][-1]
    assert (f"after epoch {last_val['epoch']}, the last evaluated: "
            f"{float(last_val['val/cluster_acc@0.99']):.3f}") in report
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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """reference(folder): metrics.json and metrics.csv of an uninterrupted tiny run (1, 1)."""
    made = {}

    def get(folder):
        if folder not in made:
            tmp = tmp_path_factory.mktemp(f"reference-{folder}")
            result = run(folder, tiny(tmp, "reference", epochs=(1, 1)))
            assert result.returncode == 0, result.stderr
            made[folder] = comparable_run(tmp / "runs" / "reference")
        return made[folder]
    return get


def test_consistency_and_invariance_terms_train_only_when_weighted(tmp_path):
    """train.consistency_weight > 0 and train.invariance_weight > 0 (MPI3D, with moved and
    recoloured pictures) add their terms (a finite, positive loss each in metrics.csv); at 0
    (off) the columns stay empty."""
    def columns(name, *overrides):
        result = run("mpi3d", [*tiny(tmp_path, name, epochs=(1, 1)), *overrides])
        assert result.returncode == 0, result.stderr[-2000:]
        with open(tmp_path / "runs" / name / "metrics.csv") as f:
            return [(row["train/cons"], row["train/inv"]) for row in csv.DictReader(f)]

    on = columns("on", "train.consistency_weight=1", "train.invariance_weight=1",
                 "data.labelled_shift=4", "data.background_swap_prob=0.5")
    assert on[0] == ("", "")  # the warm-up has no mixture to be consistent with
    assert all(0 < float(value) < float("inf") for value in on[1])
    assert columns("off", "train.consistency_weight=0", "train.invariance_weight=0") == [
        ("", ""), ("", "")]


def test_block_terms_train_their_networks_and_evaluate_restores_them(tmp_path):
    """train.leak_weight > 0 and train.indep_weight > 0 (the modular kind) add their terms (a
    finite loss each in metrics.csv), the checkpoint holds the block adversary, the block critic
    and their optimisers, and --evaluate of the run restores them and gives the same numbers."""
    result = run("mpi3d", [*tiny(tmp_path, "blocks", epochs=(1, 1)), "train.leak_weight=2",
                           "train.indep_weight=2"])
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "runs" / "blocks"
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for name in ("train/leak", "train/indep"):
        assert rows[0][name] == ""  # the warm-up has no mixture, no blocks
        assert abs(float(rows[1][name])) < float("inf")
    assert float(rows[1]["train/leak"]) > 0  # a cross-entropy; the log-odds may fall below 0
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert {"adversary", "leak_opt", "critic", "critic_opt"} <= set(ckpt)
    before = comparable(json.loads((run_dir / "metrics.json").read_text()))
    result = run("mpi3d", ["--evaluate", str(run_dir)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert comparable(json.loads((run_dir / "metrics.json").read_text())) == before


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_block_terms_have_their_networks_in_the_modular_kind_alone(tmp_path, folder):
    """The entity kind's code is one block holding every entity factor: with train.leak_weight
    and train.indep_weight set it still validates (switching kinds needs prior.free_dims=0 and
    nothing else) and builds neither the adversary nor the critic; the modular kind builds
    one adversary head per block, and the critic."""
    train = module(folder, "train")
    for kind, heads in (("modular", len(module(folder, "config").CONFIG["entities"]["bins"])),
                        ("entity", None)):
        cfg = tiny_config(folder, tmp_path, "run.device=cpu", "train.leak_weight=2",
                          "train.indep_weight=2", f"prior.kind={kind}", "prior.free_dims=0",
                          "prior.blocks=[]")
        train.config.validate(cfg)
        state = train.build_state(cfg, train.dataset.load_data(cfg, "cpu", REPO), "cpu")
        assert (None if state.adversary is None else len(state.adversary.heads)) == heads
        assert (state.critic is None) == (kind == "entity")


def comparable_run(run_dir: Path) -> tuple[dict, list[list[str]]]:
    """metrics.json and metrics.csv without the wall times."""
    lines = [line.split(",") for line in (run_dir / "metrics.csv").read_text().splitlines()]
    wall = lines[0].index("wall_s")
    return (comparable(json.loads((run_dir / "metrics.json").read_text())),
            [row[:wall] + row[wall + 1:] for row in lines])


def start(tmp_path, folder, name, *overrides) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script(folder)),
                             *tiny(tmp_path, name, epochs=(1, 1)), *overrides],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen while the run was alive (exit {proc.poll()})")


def checkpoint_step(run_dir: Path) -> tuple[int, int]:
    """(epochs completed, steps of the next) of the run's checkpoint; (-1, -1) before one."""
    try:
        ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1, -1
    return ckpt["epoch"], ckpt["step"]


def pause_inside_an_epoch(proc, run_dir: Path) -> tuple[int, int]:
    """SIGSTOP the run at a moment its checkpoint lies inside an epoch; that (epoch, step)."""
    while True:
        wait_for(lambda: checkpoint_step(run_dir)[1] >= 1, proc, "a checkpoint inside an epoch")
        os.kill(proc.pid, signal.SIGSTOP)
        where = checkpoint_step(run_dir)
        if where[1] >= 1:
            return where
        os.kill(proc.pid, signal.SIGCONT)  # an epoch ended meanwhile: try again


@pytest.mark.parametrize("folder", FOLDERS)
def test_killed_run_refuses_a_second_writer_and_resumes_to_the_same_result(tmp_path, folder,
                                                                          reference):
    # A checkpoint after every step, so the SIGKILL lands inside an epoch and loses at most
    # one step; the run writes TensorBoard files too: they change no number.
    proc = start(tmp_path, folder, "killed", "train.checkpoint_every_s=1e-9",
                 "run.tensorboard=true")
    run_dir = tmp_path / "runs" / "killed"
    inside = pause_inside_an_epoch(proc, run_dir)  # paused, alive, holding the lock
    second = run(folder, ["--resume", str(run_dir)], timeout=120)
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"in use by PID {proc.pid} on " in lines[0], lines
    proc.kill()  # SIGKILL: the operating system drops the dead holder's lock
    proc.wait()
    assert checkpoint_step(run_dir) == inside
    assert not (run_dir / "metrics.json").exists()

    resumed = run(folder, ["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert Path(resumed.stdout.strip().splitlines()[-1]) == run_dir
    assert (run_dir / "finished").is_file()
    assert comparable_run(run_dir) == reference(folder)  # bit for bit, every epoch's row


def test_pseudo_labels_join_the_supervised_term_and_a_run_killed_after_them_resumes_bit_exact(
        tmp_path):
    """train.pseudo_per_entity = k: each relational epoch begins by labelling up to k unlabelled
    training images per entity with the mixture's reading; the checkpoint holds them, so a run
    killed inside that epoch resumes to the uninterrupted run's numbers, bit for bit."""
    pseudo = ["train.pseudo_per_entity=2", "train.pseudo_after=0"]
    whole = run("dsprites", [*tiny(tmp_path, "whole", epochs=(1, 1)), *pseudo])
    assert whole.returncode == 0, whole.stderr[-2000:]
    ckpt = torch.load(tmp_path / "runs" / "whole" / "checkpoint.pt", weights_only=True)
    positions, entities = ckpt["pseudo"]
    train = module("dsprites", "train")
    data = train.dataset.load_data(tiny_config("dsprites", tmp_path, "run.device=cpu"), "cpu",
                                   REPO)
    assert 0 < len(positions) <= 2 * data.space.num_entities
    assert not set(positions.tolist()) & set(data.labelled.tolist())  # unlabelled images only
    assert int(torch.bincount(entities).max()) <= 2

    proc = start(tmp_path, "dsprites", "killed", *pseudo, "train.checkpoint_every_s=1e-9")
    run_dir = tmp_path / "runs" / "killed"
    # killed inside the relational epoch, after its pseudo-labels were made
    wait_for(lambda: checkpoint_step(run_dir)[0] == 1 and checkpoint_step(run_dir)[1] >= 1,
             proc, "a checkpoint inside the relational epoch")
    proc.kill()
    proc.wait()
    assert checkpoint_step(run_dir)[0] == 1 and not (run_dir / "metrics.json").exists()
    resumed = run("dsprites", ["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert comparable_run(run_dir) == comparable_run(tmp_path / "runs" / "whole")


def graph_run(folder, tmp_path, *overrides):
    """A tiny run of `folder` with graph pseudo-labels (two per entity, from the first
    relational epoch): (its stderr, the checkpoint's pseudo-labels (positions, entities), its
    data), after checking they are of unlabelled images, at most two per entity."""
    result = run(folder, [*tiny(tmp_path, "graph", epochs=(1, 1)), "train.pseudo_per_entity=2",
                          "train.pseudo_after=0", "train.pseudo_source=graph", *overrides])
    assert result.returncode == 0, result.stderr[-2000:]
    positions, entities = torch.load(tmp_path / "runs" / "graph" / "checkpoint.pt",
                                     weights_only=True)["pseudo"]
    data = module(folder, "dataset").load_data(
        tiny_config(folder, tmp_path, "run.device=cpu"), "cpu", REPO)
    assert not set(positions.tolist()) & set(data.labelled.tolist())
    assert int(torch.bincount(entities).max()) <= 2
    return result.stderr, (positions, entities), data


def test_graph_pseudo_labels_come_from_the_spread_labels_of_the_budget(tmp_path):
    """train.pseudo_source=graph: the pseudo-labels are the labelled codes' entities spread over
    the codes' neighbour graph, at most k per entity, on unlabelled images only, and the run
    says how many it made."""
    stderr, (positions, _), data = graph_run("dsprites", tmp_path)
    assert re.search(r"epoch 2: \d+ pseudo-labels", stderr)
    assert 0 < len(positions) <= 2 * data.space.num_entities
    assert positions.tolist() == sorted(positions.tolist())  # graph.spread's order
    # training_curves.png marks where they join, between epoch 1's row and epoch 2's
    saved = json.loads((tmp_path / "runs" / "graph" / "config.json").read_text())
    phase_marks = module("dsprites", "log").phase_marks
    assert phase_marks(saved)["pseudo-labels begin"] == 1.5
    assert "pseudo-labels begin" not in phase_marks(
        {**saved, "train": {**saved["train"], "pseudo_per_entity": 0}})


def test_graph_pseudo_labels_of_a_modular_prior_come_block_by_block(tmp_path):
    """Shapes3D's modular prior with its free block: the spreading runs on its factor blocks
    (prior.views), far-reaching (train.pseudo_alpha), and the run ends with pseudo-labels of
    unlabelled images, at most k per entity."""
    stderr, _, _ = graph_run("shapes3d", tmp_path, "train.pseudo_alpha=0.9")
    assert re.search(r"epoch 2: [1-9]\d* pseudo-labels", stderr)
    saved = json.loads((tmp_path / "runs" / "graph" / "config.json").read_text())
    assert saved["prior"]["kind"] == "modular" and saved["prior"]["free_dims"] > 0


@pytest.mark.parametrize("folder", FOLDERS)
def test_phase_marks_sit_between_the_rows_of_their_epochs(folder):
    cfg = module(folder, "config").CONFIG
    cfg = {**cfg, "train": {**cfg["train"], "warmup_epochs": 3, "relational_epochs": 10,
                            "lr_decay_epochs": 4, "pseudo_per_entity": 5, "pseudo_after": 2},
           "prior": {**cfg["prior"], "calibrate_epochs": 3}}
    marks = module(folder, "log").phase_marks(cfg)
    # rows are numbered from 1: the first relational epoch is row 4, the last row 13
    assert marks == {"warm-up ends": 3.5, "lr decay starts": 9.5, "pseudo-labels begin": 5.5,
                     "calibration begins": 10.5}
    assert module(folder, "log").phase_marks(
        {**cfg, "prior": {**cfg["prior"], "calibrate_epochs": 0}}).keys() == {
        "warm-up ends", "lr decay starts", "pseudo-labels begin"}
    # more calibration epochs than relational ones: from the first relational epoch
    assert module(folder, "log").phase_marks(
        {**cfg, "prior": {**cfg["prior"], "calibrate_epochs": 50}})["calibration begins"] == 3.5


def test_training_curves_draw_four_marks_and_refuse_a_fifth(tmp_path):
    from common import plots

    marks = {"warm-up ends": 3.5, "lr decay starts": 9.5, "pseudo-labels begin": 5.5,
             "calibration begins": 10.5}
    rows = [{"epoch": e, "loss": 1.0 / e} for e in range(1, 14)]
    plots.curves(rows, {"loss": ["loss"]}, tmp_path / "four.png", marks=marks)
    assert (tmp_path / "four.png").stat().st_size > 0
    with pytest.raises(ValueError, match="line styles"):
        plots.curves(rows, {"loss": ["loss"]}, tmp_path / "five.png",
                     marks={**marks, "another": 7.5})


def test_sigterm_checkpoints_inside_the_epoch_and_evaluate_says_the_run_is_partial(tmp_path,
                                                                                 reference):
    proc = start(tmp_path, "dsprites", "stopped")
    run_dir = tmp_path / "runs" / "stopped"
    csv = run_dir / "metrics.csv"
    wait_for(lambda: csv.exists() and len(csv.read_text().splitlines()) >= 2, proc,
             "the first epoch")  # SIGTERM now lands in epoch 2
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM at epoch 2, step ") and \
        f"--resume {run_dir}" in last, last
    epoch, step = checkpoint_step(run_dir)
    assert epoch == 1 and step >= 1  # inside epoch 2
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "finished").exists()

    partial = run("dsprites", ["--evaluate", str(run_dir)])
    assert partial.returncode == 0, partial.stderr
    assert "stopped after epoch 1 of 2" in partial.stderr
    assert json.loads((run_dir / "metrics_partial.json").read_text())["epochs"] == 1
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "finished").exists()
    assert "**Partial**" in (run_dir / "report.md").read_text()

    resumed = run("dsprites", ["--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert (run_dir / "finished").is_file()
    assert comparable_run(run_dir) == reference("dsprites")


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
    ("dsprites", "train.lr=nan", "train.lr must be > 0"),
    ("dsprites", "data.split=[1.0, 0.0, 0.0]", "leaves the val split"),  # known from the data
]


@pytest.mark.parametrize("folder, override, needle", BAD_INPUT)
def test_bad_input_stops_at_once_with_one_clear_line(tmp_path, capsys, folder, override, needle):
    # in-process, the same main() and exit codes the script runs (the script itself is run
    # on bad input by the tests below and by the second-writer check above)
    main = module(folder, "train").main
    code = module("common", "cli").run(lambda: main([*tiny(tmp_path, "bad"), override]))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()  # a stand-in's render may say so first
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]] and needle in lines[-1], lines
    assert not (tmp_path / "runs" / "bad").exists()


def test_a_bad_command_line_is_answered_before_the_slow_imports():
    # torchvision (which loads torch._dynamo) and scikit-learn take seconds to import; a run
    # needs them only for its pictures and literature metrics, so a typo is answered without
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys\n"
         f"for folder in {FOLDERS!r}:\n"
         "    code = __import__('common.cli').cli.run(\n"
         "        lambda: __import__(folder + '.train').train.main(['train.batch_sise=3']))\n"
         "    assert code == 2, code\n"
         "print(sorted(m for m in ('torchvision', 'sklearn') if m in sys.modules))"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
    assert result.stderr.count("did you mean 'train.batch_size'") == len(FOLDERS)


# ---------------------------------------------------------------- one folder suffices
# The loop, checkpointing, command line and method checks are the same code in every folder
# (tests/test_copies.py), so what follows runs on dSprites, the fastest.


@pytest.mark.parametrize("override, pattern", METHOD_REJECTS)
def test_every_bad_method_value_stops_before_a_run_folder(tmp_path, capsys, override, pattern):
    main = module("dsprites", "train").main
    code = module("common", "cli").run(lambda: main([*tiny(tmp_path, "bad"), override]))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and re.search(pattern, lines[0]), lines
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- more of one folder


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
    # on a CPU reduce-overhead compiles as default does (CUDA graphs need CUDA), so this one
    # run covers both modes here; on CUDA the GPU check runs reduce-overhead (bench step)
    result = run("dsprites", [*tiny(tmp_path, "fast", epochs=(1, 1)), "train.amp=bf16",
                              "train.compile=reduce-overhead",
                              "train.channels_last=true"])
    assert result.returncode == 0, result.stderr
    assert "training forward passes in bf16 autocast (train.amp=bf16)" in result.stderr
    run_dir = tmp_path / "runs" / "fast"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["test/recon_loss"] < 5000
    keys = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"].keys()
    assert not any("_orig_mod" in k for k in keys)  # loads into an uncompiled model


def foreign_run(tmp_path, capsys):
    """A tiny dSprites run folder with no checkpoint yet, and a function that resumes it
    in-process (the same main() the script runs) and returns (exit code, stderr lines)."""
    train, configlib = module("dsprites", "train"), module("common", "config")
    config = module("dsprites", "config")
    cfg = configlib.resolve(config.CONFIG, config.PRESETS, "tiny",
                            [a for a in tiny(tmp_path, "x")[2:] if not a.startswith("run.name")])
    run_dir = tmp_path / "foreign"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(cfg))

    def resume():
        capsys.readouterr()
        code = module("common", "cli").run(lambda: train.main(["--resume", str(run_dir)]))
        return code, capsys.readouterr().err.strip().splitlines()
    return run_dir, cfg, resume


@pytest.mark.parametrize("content, needle", [
    ("[1, 2]", "holds a list, not a run's config"),
    ("null", "holds a NoneType"),
    (b"\x80\x81binary", "is not valid JSON"),
    ("{\"run\": ", "is not valid JSON"),
])
def test_hand_edited_config_json_is_refused_in_one_line(tmp_path, capsys, content, needle):
    run_dir, _, resume = foreign_run(tmp_path, capsys)
    path = run_dir / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, lines = resume()
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines


def test_foreign_run_files_are_refused_in_one_line(tmp_path, capsys):
    run_dir, cfg, resume = foreign_run(tmp_path, capsys)
    edited = json.loads(json.dumps(cfg))
    edited["train"]["lr"] = float("nan")  # json writes NaN, which Python's json reads back
    (run_dir / "config.json").write_text(json.dumps(edited))
    code, lines = resume()
    assert code == 2 and lines == ["error: train.lr must be > 0 and <= 10, got nan"], lines

    (run_dir / "config.json").write_text(json.dumps(cfg))
    (run_dir / "metrics.csv").write_text("who,what\n1,2\n")
    code, lines = resume()
    assert code == 2 and len(lines) == 1 and "not a metrics file this code wrote" in lines[0]
    (run_dir / "metrics.csv").unlink()

    torch.save({"format": 2, "dataset": "dsprites", "hello": 1}, run_dir / "checkpoint.pt")
    code, lines = resume()  # a torch file that is not a checkpoint of ours
    assert code == 2 and len(lines) == 1 and "does not fit the run's config.json" in lines[0]

    other = json.loads(json.dumps(cfg))
    other["model"]["z_dim"] = cfg["model"]["z_dim"] + 2  # a checkpoint of another architecture
    train = module("dsprites", "train")
    data = module("dsprites", "dataset").load_data(other, "cpu", REPO)
    runlog = module("common", "runlog")
    train.save(train.build_state(other, data, "cpu"), runlog.RunFolder(run_dir), other)
    code, lines = resume()
    assert code == 2 and len(lines) == 1 and "does not fit the run's config.json" in lines[0]
    assert "size mismatch" in lines[0], lines


@pytest.mark.parametrize("folder", FOLDERS)
def test_decoded_metrics_draw_in_bf16_within_a_few_levels_of_fp32(folder):
    """train.draw decodes for the decoded metrics in the training precision; under bf16
    autocast its uint8 pictures stay within a few of 255 levels of the fp32 ones."""
    from common import config as configlib
    from common.evaluation import to_uint8
    config = module(folder, "config")
    cfg = configlib.resolve(config.CONFIG, config.PRESETS, "tiny", ["train.amp=bf16"])
    train = module(folder, "train")
    torch.manual_seed(0)
    state = train.build_state(cfg, SimpleNamespace(space=module(folder, "dataset")
                                                   .entity_space(cfg)), "cpu")
    state.model.eval()
    z = 2 * torch.randn(256, cfg["model"]["z_dim"])
    assert state.amp
    bf16 = to_uint8(train.draw(state, z)).int()
    state.amp = False
    fp32 = to_uint8(train.draw(state, z)).int()
    diff = (bf16 - fp32).abs()
    assert diff.max() > 0  # the precision switch acts
    assert diff.float().mean() < 0.5 and (diff <= 3).float().mean() > 0.999, \
        (diff.float().mean(), diff.max())


def test_metrics_json_holds_strict_json(tmp_path):
    from common.checkpoint import write_json
    write_json({"a": float("inf"), "b": [float("nan"), 1.0]}, tmp_path / "m.json")
    assert (tmp_path / "m.json").read_text().replace(" ", "").replace("\n", "") == \
        '{"a":null,"b":[null,1.0]}'

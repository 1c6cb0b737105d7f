"""The real sweep.py over the real dsprites/train.py: runs, skips finished runs, plots; shares
one output folder with another sweep without training a run twice."""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.scripts import tiny

pytestmark = pytest.mark.runs  # trains whole runs: scheduled first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[1]


def sweep(*args):
    return subprocess.run([sys.executable, str(REPO / "sweep.py"), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=600)


def test_sweep_runs_every_seed_and_budget_then_only_collects(tmp_path):
    out = tmp_path / "sweep"
    overrides = [a for a in tiny(tmp_path, "unused", epochs=(0, 1))  # --preset tiny and more
                 if not a.startswith(("run.root=", "run.name="))]
    args = ["dsprites", "--seeds", "0", "1", "--budgets", "1", "2", "--out", str(out),
            "--jobs", "2", *overrides]
    result = sweep(*args)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip().splitlines()[-1]) == out
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["budget"], r["seed"]) for r in rows] == [("1", "0"), ("1", "1"), ("2", "0"),
                                                        ("2", "1")]
    for budget in (1, 2):
        for seed in (0, 1):
            metrics = json.loads((out / f"budget{budget}-seed{seed}" / "metrics.json").read_text())
            assert metrics["labelled_images"] == 27 * budget
            assert json.loads((out / f"budget{budget}-seed{seed}" / "config.json").read_text())[
                "run"]["seed"] == seed
    summary = json.loads((out / "summary.json").read_text())
    stats = summary["test/cluster_acc@0.99"]["2"]
    values = [float(r["test/cluster_acc@0.99"]) for r in rows if r["budget"] == "2"]
    assert stats["n"] == 2 and abs(stats["mean"] - sum(values) / 2) < 1e-9
    assert (out / "sweep.png").stat().st_size > 10_000
    for row in rows:  # the labelled fraction of the training images the plots' x axis reads
        metrics = json.loads((out / f"budget{row['budget']}-seed{row['seed']}" /
                              "metrics.json").read_text())
        assert float(row["fraction"]) == 27 * int(row["budget"]) / metrics["train_images"]

    other = tmp_path / "other"  # a second finished sweep, to draw beside the first
    other.mkdir()
    (other / "sweep.csv").write_text((out / "sweep.csv").read_text())
    compared = sweep("dsprites", "--compare", str(out), str(other), "--out", str(tmp_path / "c"))
    assert compared.returncode == 0, compared.stderr
    assert (tmp_path / "c" / "compare.png").stat().st_size > 10_000
    missing = sweep("dsprites", "--compare", str(out), str(tmp_path / "none"))
    assert missing.returncode == 1 and "none/sweep.csv does not exist" in missing.stderr

    before = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    again = sweep(*args)  # everything finished: nothing is rerun
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == before


def test_sweep_stops_on_a_bad_config(tmp_path):
    result = sweep("dsprites", "--seeds", "0", "1", "--budgets", "1", "--out",
                   str(tmp_path / "s"), "train.batch_sise=3")
    assert result.returncode == 1
    assert "bad config" in result.stderr
    log = (tmp_path / "s" / "budget1-seed0.log").read_text()
    assert "train.batch_size" in log  # train.py named the nearest valid key


def test_two_sweeps_on_one_folder_train_every_run_exactly_once(tmp_path):
    out = tmp_path / "sweep"
    overrides = [a for a in tiny(tmp_path, "unused", epochs=(0, 1))
                 if not a.startswith(("run.root=", "run.name="))]
    args = [sys.executable, str(REPO / "sweep.py"), "dsprites", "--seeds", "0", "1", "2",
            "--budgets", "1", "--out", str(out), *overrides]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 120
    while not (out / "budget1-seed0" / "config.json").exists() and time.time() < deadline:
        time.sleep(0.05)  # the first sweep is training its first run
    second = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    results = [proc.communicate(timeout=600) for proc in (first, second)]
    assert first.returncode == second.returncode == 0, results
    assert "budget1-seed0 skipped: in use by PID" in results[1][1]  # never resumed beside it
    for seed in (0, 1, 2):
        log = (out / f"budget1-seed{seed}.log").read_text()
        assert log.count("run folder: ") == 1, log  # trained once, by one of the two
        epochs = [line.split(",")[0] for line in
                  (out / f"budget1-seed{seed}" / "metrics.csv").read_text().splitlines()]
        assert epochs == ["epoch", "1"]
        assert (out / f"budget1-seed{seed}" / "finished").is_file()


def test_shards_own_the_same_runs_whatever_has_finished(monkeypatch):
    sys.path.insert(0, str(REPO))
    import sweep as sweep_module

    grid = [(b, s) for b in (1, 5) for s in (0, 1, 2)]
    shares = [sweep_module.my_runs((1, 5), (0, 1, 2), (i, 4)) for i in range(4)]
    assert sorted(run for share in shares for run in share) == sorted(grid)  # each once
    assert shares[1] == [(1, 1), (5, 2)]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")  # --array=2-5: the second task
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert sweep_module.parse_args(["dsprites"]).shard == (1, 4)
    assert sweep_module.parse_args(["dsprites", "--shard", "3/4"]).shard == (2, 4)

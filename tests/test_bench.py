"""bench/run.py on the tiny preset: the figures it reports are consistent with one another, the
FLOP fraction is taken against the peak of the precision the training runs in, and several
datasets go to one JSON file, one object each."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import shared_cache

pytestmark = pytest.mark.runs  # trains whole runs: scheduled first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[1]


def bench(tmp_path, *args) -> dict:
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--preset", "tiny",
                             "--steps", "1", "--out", str(out), *args,
                             f"data.cache_dir={shared_cache(tmp_path)}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


def test_two_datasets_one_file_each_fraction_against_its_own_precision(tmp_path):
    report = bench(tmp_path, "--dataset", "dsprites,mpi3d")
    assert sorted(report) == ["dsprites", "mpi3d"]
    for dataset, figures in report.items():
        assert figures["dataset"] == dataset
        tiny = importlib.import_module(f"{dataset}.config").PRESETS["tiny"]
        assert figures["batch_size"] == tiny["train.batch_size"]  # the preset was applied
        assert figures["warmup_img_s"] > 0 and figures["relational_img_s"] > 0
        precision = figures["peak_precision"]
        peak = figures[f"matmul_peak_gflops_{precision}"]
        assert figures["flop_fraction"] == pytest.approx(figures["achieved_gflops"] / peak)
        assert figures["flop_fraction_fp32"] == pytest.approx(
            figures["achieved_gflops"] / figures["matmul_peak_gflops_fp32"])
        assert figures["achieved_gflops"] == pytest.approx(
            figures["warmup_flops_per_img"] * figures["warmup_img_s"] / 1e9)
    # one model, three datasets' images: MPI3D's 64x64x3 costs more per image than 64x64x1
    assert report["mpi3d"]["warmup_flops_per_img"] > report["dsprites"]["warmup_flops_per_img"]


def test_fp32_training_is_measured_against_the_fp32_peak(tmp_path):
    figures = bench(tmp_path, "--dataset", "dsprites", "train.amp=off")
    assert figures["dataset"] == "dsprites"  # one dataset: a flat object
    assert figures["peak_precision"] == "fp32"
    assert "matmul_peak_gflops_bf16" not in figures
    assert figures["flop_fraction"] == figures["flop_fraction_fp32"]


def test_an_unknown_dataset_is_refused_with_the_choices():
    result = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--dataset",
                             "dsprites,celeba"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "unknown ['celeba']; choose from ['dsprites', 'mpi3d', 'shapes3d'] or all" in (
        result.stderr)


def test_label_probe_trains_on_the_labelled_images_alone_and_reads_the_test_split(tmp_path):
    probe = importlib.import_module("bench.label_probe").probe
    cache = f"data.cache_dir={shared_cache(tmp_path)}"
    scores = probe("mpi3d", 2, 4, 30, [cache], preset="tiny")
    config = importlib.import_module("mpi3d.config")
    bins = config.PRESETS["tiny"]
    entities = (len(bins["entities.bins.object_color"]) * len(bins["entities.bins.object_shape"])
                * len(config.CONFIG["entities"]["bins"]["object_size"]))
    assert scores["labelled"] == 2 * entities  # the budget, not the training split
    assert set(scores) == {"labelled", "object_color", "object_shape", "object_size", "entity"}
    assert all(0.0 <= scores[k] <= 1.0 for k in scores if k != "labelled")
    assert scores["entity"] <= min(scores["object_color"], scores["object_shape"],
                                   scores["object_size"])
    assert probe("mpi3d", 2, 4, 30, [cache], preset="tiny") == scores  # seeded: repeatable


def test_block_probe_reads_what_the_decoded_metrics_read_and_the_oracles_land_on_their_block(
        tmp_path):
    """bench/block_probe.py on a tiny modular MPI3D run: ReL's landing point scores exactly what
    metrics.json's decoded relation accuracy says (the same pictures, the same classifier), the
    oracles sit on the counterpart's block, and every block's leak is read for every entity
    factor and every nuisance that varies."""
    from tests.scripts import run, tiny

    result = run("mpi3d", tiny(tmp_path, "probe", epochs=(1, 1)))
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "runs" / "probe"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    probed = importlib.import_module("bench.block_probe").probe(run_dir)
    factors = {"object_color", "object_shape", "object_size"}
    assert set(probed["leaks"]) == factors | {"free"}
    # the tiny preset's nuisances that vary (camera height is fixed there)
    read = factors | {"background_color", "horizontal_axis", "vertical_axis"}
    assert all(set(reads) == read and all(0 <= v <= 1 for v in reads.values())
               for reads in probed["leaks"].values())
    for name, moves in probed["relations"].items():
        assert moves["rel"]["target_entity"] == pytest.approx(
            metrics[f"test/rel_acc_decoded/{name}"], abs=1e-9)
        assert moves["oracle_block"]["block_distance"] == 0
        assert moves["oracle_full"]["block_distance"] == 0
        assert moves["mean"]["block_distance"] > 0

"""bench/gpu_check.sh on a machine without CUDA: it stops at once, exit 3, with one line that
says it needs CUDA (never a silent pass, never a half-run check). Where the machine has a GPU
the fakes below hide it: a failing nvidia-smi, then CUDA_VISIBLE_DEVICES=""."""

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def fake_nvidia_smi(folder: Path, code: int) -> dict:
    """The environment with an nvidia-smi that exits with `code` first on PATH."""
    folder.mkdir()
    (folder / "nvidia-smi").write_text(f"#!/bin/sh\nexit {code}\n")
    (folder / "nvidia-smi").chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def gpu_check(env: dict) -> tuple[subprocess.CompletedProcess, float]:
    began = time.perf_counter()
    result = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    return result, time.perf_counter() - began


def test_without_a_gpu_it_stops_at_once_with_one_line(tmp_path):
    result, seconds = gpu_check(fake_nvidia_smi(tmp_path / "bin", code=9))
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    assert result.stderr.strip().splitlines() == [
        "bench/gpu_check.sh needs CUDA: nvidia-smi finds no NVIDIA GPU on this machine; "
        "run it on a GPU machine"]
    assert seconds < 5  # before installing anything


def test_when_torch_sees_no_cuda_it_stops_before_any_step_with_one_line():
    """The script's second gate, bench/gpu_check.py (which gpu_check.sh runs once nvidia-smi
    finds a GPU and make install is done), with every GPU hidden from torch."""
    results_before = sorted((REPO / "bench" / "results").iterdir())
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py")], cwd=REPO,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs CUDA: torch.cuda.is_available() is False" in lines[0], lines
    assert sorted((REPO / "bench" / "results").iterdir()) == results_before  # no JSON written


def test_each_bench_step_runs_the_config_it_names(tmp_path):
    """The bench steps' overrides resolve as bench/run.py resolves them: the paper preset's
    compile mode, but CUDA graphs in the step named for them (an override after the preset's)."""
    gpu_check = importlib.import_module("bench.gpu_check")  # as test_bench imports its scripts
    from common import config as configlib
    from dsprites import config as dsprites_config

    compiled = {}
    for name, _, command in gpu_check.bench_commands(tmp_path):
        overrides = [arg for arg in command[2:] if "=" in arg and not arg.startswith("-")]
        if name.startswith("bench/dsprites"):
            cfg = configlib.resolve(dsprites_config.CONFIG, dsprites_config.PRESETS, None,
                                    overrides)
            compiled[name] = cfg["train"]["compile"]
            assert cfg["train"]["batch_size"] == dsprites_config.PRESETS["paper"][
                "train.batch_size"]
    assert compiled == {"bench/dsprites": "default", "bench/dsprites/time_to_acc": "default",
                        "bench/dsprites/reduce_overhead": "reduce-overhead"}

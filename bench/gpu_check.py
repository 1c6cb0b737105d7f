"""The GPU check's steps (bench/gpu_check.sh installs and calls this):

    python bench/gpu_check.py [OUT.json] [--budget-s 480]

1. the CUDA tests (tests/test_cuda.py: tiny bf16 + compile runs, mixture maths against the
   CPU, training steps under torch's sync debug mode);
2. each dataset's train.py with the paper preset (bf16, torch.compile, channels-last) for one
   warm-up and one relational epoch on CUDA, to a finished run folder: wall time, training
   images/s, the time outside training (start-up, data, final evaluation), its metrics;
3. bench/run.py --device cuda for every dataset with the paper preset's batch sizes and
   compile, then dSprites again with --time-to-acc (a default-length run: the time until
   validation accuracy first reaches 0.95), and once more compiled with
   train.compile=reduce-overhead (CUDA graphs) to compare with its first figures;
4. torchrun --standalone --nproc_per_node=1 on dSprites, the paper preset's two short epochs.

Each step has a timeout and the whole check a budget (--budget-s): a step that would start
past the budget is recorded as skipped, one that fails or times out as such, and the check goes
on. Every figure goes to one flat JSON file (default bench/results/<gpu name>.json, with the
commit), and a table is printed. Exit 0 when every step passed, 1 otherwise; 3 without CUDA.
"""

import argparse
import importlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the dataset folders' configs (paper_overrides)
PYTHON = sys.executable
DATASETS = sorted(path.parent.name for path in REPO.glob("*/train.py"))
SHORT = ["train.warmup_epochs=1", "train.relational_epochs=1", "run.eval_every=1"]
METRICS = ("test/cluster_acc@0.99", "test/cluster_accept@0.99", "test/rel_acc_data",
           "test/rel_acc_decoded", "wall_time_s")


def paper_overrides(dataset: str) -> list[str]:
    """The paper preset as key=value overrides, without its epochs (bench/run.py reads no
    presets)."""
    preset = importlib.import_module(f"{dataset}.config").PRESETS["paper"]
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in preset.items()
            if not k.endswith("_epochs") and k != "run.eval_every"]


def bench_commands(scratch: Path) -> list[tuple[str, Path, list[str]]]:
    """(step name, JSON report, command) of each bench/run.py step: every dataset with the paper
    preset's batch sizes and compile, then dSprites with --time-to-acc, and last the same
    dSprites step in CUDA graphs, to read beside bench/dsprites."""
    variants = [*[(d, "", []) for d in DATASETS],
                ("dsprites", "time_to_acc", ["--time-to-acc"]),
                ("dsprites", "reduce_overhead", ["train.compile=reduce-overhead"])]
    commands = []
    for dataset, variant, extra in variants:
        report = scratch / f"{dataset}{variant}.json"
        commands.append((f"bench/{dataset}" + (f"/{variant}" if variant else ""), report,
                         [PYTHON, "bench/run.py", "--dataset", dataset, "--device", "cuda",
                          "--out", str(report), *paper_overrides(dataset),
                          f"run.root={scratch}", *extra]))  # extra last: it overrides the preset
    return commands


class Check:
    """The steps, their figures and a wall-clock budget."""

    def __init__(self, budget_s: float):
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.figures: dict = {}
        self.failed: list[str] = []

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def step(self, name: str, command: list[str], timeout: float, **kwargs):
        """Runs command (cwd = the repository); returns the CompletedProcess, or None when it
        was skipped, timed out or failed (recorded under <name>/status)."""
        if self.left() < min(timeout, 60):
            self.figures[f"{name}/status"] = "skipped (budget spent)"
            self.failed.append(name)
            return None
        print(f"== {name}: {' '.join(command)}", flush=True)
        began = time.perf_counter()
        try:
            result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                    timeout=min(timeout, self.left()), **kwargs)
        except subprocess.TimeoutExpired:
            self.figures[f"{name}/status"] = f"timed out after {time.perf_counter() - began:.0f} s"
            self.failed.append(name)
            return None
        self.figures[f"{name}/wall_s"] = round(time.perf_counter() - began, 1)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            self.figures[f"{name}/status"] = f"failed (exit {result.returncode}): {tail[0][:300]}"
            self.failed.append(name)
            return None
        self.figures[f"{name}/status"] = "ok"
        return result


def training_figures(check: Check, name: str, run_dir: Path) -> None:
    """The run's own numbers: its metrics, training images/s, and the wall time outside
    training (start-up, data, the final evaluation; compilation counts as training)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in METRICS:
        if key in metrics:
            check.figures[f"{name}/{key}"] = metrics[key]
    images = metrics.get("train_images", 0) * metrics.get("epochs", 0)
    if metrics.get("wall_time_s"):
        check.figures[f"{name}/train_img_s"] = round(images / metrics["wall_time_s"], 1)
        check.figures[f"{name}/outside_training_s"] = round(
            check.figures[f"{name}/wall_s"] - metrics["wall_time_s"], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="JSON file (default bench/results/<gpu>.json)")
    parser.add_argument("--budget-s", type=float, default=480, help="wall-clock budget")
    args = parser.parse_args()

    import torch
    if not torch.cuda.is_available():
        print("bench/gpu_check.py needs CUDA: torch.cuda.is_available() is False (no GPU, no "
              "driver, or a CPU-only torch); run it on a GPU machine", file=sys.stderr)
        return 3
    gpu = torch.cuda.get_device_name(0)
    out = Path(args.out) if args.out else (
        REPO / "bench" / "results" / f"{re.sub(r'[^a-z0-9]+', '_', gpu.lower()).strip('_')}.json")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=REPO).stdout.strip() or "unknown"
    check = Check(args.budget_s)
    check.figures.update({"gpu": gpu, "commit": commit, "torch": torch.__version__,
                          "cuda": torch.version.cuda})
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        result = check.step("tests", [PYTHON, "-m", "pytest", "-q", "-m", "cuda",
                                      "tests/test_cuda.py"], timeout=200)
        if result is not None:
            check.figures["tests/summary"] = result.stdout.strip().splitlines()[-1]

        for dataset in DATASETS:
            name = f"train/{dataset}"
            result = check.step(name, [PYTHON, f"{dataset}/train.py", "--preset", "paper",
                                       *SHORT, "run.device=cuda", f"run.root={scratch}",
                                       f"run.name={dataset}"], timeout=150)
            if result is not None:
                training_figures(check, name, scratch / dataset)

        for name, report, command in bench_commands(scratch):
            result = check.step(name, command, timeout=150)
            if result is not None:
                bench = json.loads(report.read_text())
                check.figures.update({f"{name}/{k}": v for k, v in bench.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)})

        launcher = shutil.which("torchrun") or str(Path(PYTHON).with_name("torchrun"))
        result = check.step("torchrun/dsprites", [launcher, "--standalone", "--nproc_per_node=1",
                                                  "dsprites/train.py", "--preset", "paper",
                                                  *SHORT, "run.device=cuda",
                                                  f"run.root={scratch}", "run.name=torchrun"],
                            timeout=150)
        if result is not None:
            training_figures(check, "torchrun/dsprites", scratch / "torchrun")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    check.figures["total_wall_s"] = round(time.perf_counter() - check.start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(check.figures, indent=2) + "\n")
    width = max(len(k) for k in check.figures)
    for key, value in check.figures.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else
              f"{key:<{width}}  {value}")
    print(f"{len(check.failed)} step(s) not ok: {', '.join(check.failed)}" if check.failed
          else "every step ok", f"-> {out}", sep="\n")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())

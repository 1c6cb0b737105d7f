"""Training-speed benchmark of a dataset's pipeline (dSprites unless --dataset says otherwise).

    python bench/run.py [--dataset dsprites|shapes3d|mpi3d|a,b|all] [--out FILE.json]
                        [--device cpu|cuda] [--steps 30] [--time-to-acc] [--preset NAME]
                        [key=value ...]     # config overrides, as for train.py

Measures, on the default config (or the overrides): images/s of a warm-up step and of a
relational step, ReL examples/s, evaluation time, the model's FLOPs per training image, the
achieved fraction of the device's measured matmul peak in the precision the training runs in
(`flop_fraction`, against the bf16 peak when bf16 autocast is on: `peak_precision`) and of
its fp32 peak (`flop_fraction_fp32`), how the cost of a relation batch
scales from 64 to 4096 examples (1x would mean a per-example Python loop was absent and the
work were free; a loop would show ~64x), peak memory and, with --time-to-acc, the wall time of
a full default run until validation clustering accuracy at q=0.99 first reaches 0.95.
Prints a table and writes JSON with the commit it was measured at: flat for one dataset, one
flat object per dataset for several (`--dataset all`: bench/results/cpu_2core.json).
"""

import argparse
import importlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from common import config as configlib  # noqa: E402
from common import runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATASETS = sorted(path.parent.name for path in REPO.glob("*/train.py"))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, steps: int, warmup: int = 3) -> float:
    """Seconds per call of fn, after a few untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def matmul_peak_flops(device, dtype) -> float:
    """Best FLOP/s of a large square matmul in this dtype."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = min(timed(lambda: a @ b, device, steps=5, warmup=2) for _ in range(3))
    return 2 * n**3 / seconds


def step_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def time_to_accuracy(dataset, preset, overrides, target=0.95) -> float | None:
    """Run train.py with evaluation every epoch; wall time when val acc@0.99 first >= target."""
    preset = ["--preset", preset] if preset else []
    result = subprocess.run([sys.executable, str(REPO / dataset / "train.py"), *preset,
                             "run.eval_every=1", *overrides], capture_output=True, text=True,
                            cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    from common.runlog import RunFolder

    for row in RunFolder(run_dir).read_metrics():
        acc = row.get("val/cluster_acc@0.99")
        if acc and float(acc) >= target:
            return float(row["wall_s"])
    return None


def measure(dataset: str, args) -> dict:
    """Every figure of one dataset's default config (or the preset and overrides)."""
    train = importlib.import_module(f"{dataset}.train")  # the dataset's own loop
    overrides = [f"run.device={args.device}", *args.overrides]
    cfg = configlib.resolve(train.config.CONFIG, train.config.PRESETS, args.preset, overrides)
    train.config.validate(cfg)
    _, device = runtime.setup(cfg)
    data = train.dataset.load_data(cfg, device, REPO)
    state = train.build_state(cfg, data, device)
    batch = torch.arange(cfg["train"]["batch_size"], device=device)
    space = data.space
    batch_size, rel_batch_size = cfg["train"]["batch_size"], cfg["train"]["rel_batch_size"]

    results = {"dataset": dataset, "commit": commit(), "device": str(device),
               "torch": torch.__version__,
               "threads": torch.get_num_threads(), "batch_size": batch_size}
    warmup_s = timed(lambda: train.warmup_step(state, data, batch, cfg), device, args.steps)
    results["warmup_img_s"] = batch_size / warmup_s
    flops = step_flops(lambda: train.warmup_step(state, data, batch, cfg))
    results["warmup_flops_per_img"] = flops / batch_size

    train.init_adaptive_prior(state, data, cfg)
    relational_s = timed(lambda: train.relational_step(state, data, batch, cfg), device,
                         args.steps)
    results["relational_img_s"] = batch_size / relational_s
    rel_s = timed(lambda: train.rel_step(state, space, cfg), device, args.steps)
    results["rel_examples_s"] = rel_batch_size / rel_s

    def relation_batch(n):
        source = torch.randint(0, space.num_entities, (n,), device=device)
        relation = torch.randint(0, len(space.relation_names), (n,), device=device)
        target = state.table[relation, source]
        return state.prior.sample(source), state.prior.sample(target)

    with torch.no_grad():
        small = timed(lambda: relation_batch(64), device, 200)
        large = timed(lambda: relation_batch(4096), device, 200)
    results["rel_batch_4096_over_64"] = large / small

    start = time.perf_counter()
    train.evaluate(state, data, cfg, "val")
    sync(device)
    results["eval_s"] = time.perf_counter() - start

    # like with like: the training's FLOP/s against the peak of the precision it runs in
    peaks = {"fp32": matmul_peak_flops(device, torch.float32)}
    if state.amp:
        peaks["bf16"] = matmul_peak_flops(device, torch.bfloat16)
    results["peak_precision"] = "bf16" if state.amp else "fp32"
    for precision, peak in peaks.items():
        results[f"matmul_peak_gflops_{precision}"] = peak / 1e9
    achieved = results["warmup_flops_per_img"] * results["warmup_img_s"]
    results["achieved_gflops"] = achieved / 1e9
    results["flop_fraction"] = achieved / peaks[results["peak_precision"]]
    results["flop_fraction_fp32"] = achieved / peaks["fp32"]
    if device.type == "cuda":
        results["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        results["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.time_to_acc:
        results["time_to_acc_s"] = time_to_accuracy(dataset, args.preset, overrides)
    return results


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=REPO).stdout.strip() or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--dataset", default="dsprites",
                        help=f"one of {', '.join(DATASETS)}, several joined by commas, or all")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--preset", help="a named set of overrides of the dataset's config")
    parser.add_argument("--time-to-acc", action="store_true",
                        help="also run a full training to time accuracy 0.95 (minutes)")
    args = parser.parse_args()
    datasets = DATASETS if args.dataset == "all" else list(dict.fromkeys(args.dataset.split(",")))
    unknown = [name for name in datasets if name not in DATASETS]
    if unknown:
        parser.error(f"--dataset {args.dataset}: unknown {unknown}; choose from {DATASETS} or all")

    every = {}
    for dataset in datasets:
        results = every[dataset] = measure(dataset, args)
        width = max(map(len, results))
        for key, value in results.items():
            shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
            print(f"{key:<{width}}  {shown}")
        print()
    if args.out:
        report = every[datasets[0]] if len(datasets) == 1 else every
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Supervision sweep: one config over several seeds and labelled budgets, then a plot.

    python sweep.py dsprites                                  # 3 seeds x budgets 1 2 5 10 20
    python sweep.py dsprites --seeds 0 1 --budgets 5 20 train.relational_epochs=6
    python sweep.py dsprites --jobs 2                         # two runs at once (1 thread each)
    python sweep.py dsprites --shard 1/3                      # this machine's third of the runs
    python sweep.py dsprites --collect                        # only gather and plot
    python sweep.py dsprites --compare runs/sweep-a runs/sweep-b --out runs/a-vs-b  # one plot
    python sweep.py dsprites --preset paper                   # every run from a config preset

Each run is the real <dataset>/train.py with run.seed and data.labelled_per_entity set, in
<out>/budget<B>-seed<S>/ (its log beside it). Finished runs (their `finished` marker) are
skipped and stopped ones resumed, so an interrupted sweep continues where it was.

Several processes can share one output folder (a job array, machines on one file system):
--shard i/n (or SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT when --shard is absent) takes
every n-th run of the whole (budget, seed) grid, sliced before anything is filtered, so shards
started at any time agree on who owns what. Each run is claimed through a lock
(<out>/.budget<B>-seed<S>.claim, then the run folder's own lock: common/runlog.py): a run
that another live process holds is skipped and reported, never resumed beside it.

At the end: sweep.csv (one row per finished run, with the labelled fraction of the training
images), summary.json (mean and standard deviation over seeds) and sweep.png (each metric
against the labelled fraction). --compare draws the sweep.csv of several finished sweeps (of
one dataset, e.g. prior.kind=entity and =modular) in one compare.png, one colour each.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from common import plots  # noqa: E402
from common.render import cpu_count  # noqa: E402
from common.runlog import FINISHED, LOCK, FileLock  # noqa: E402

DATASETS = sorted(path.parent.name for path in REPO.glob("*/train.py"))  # every dataset folder
METRICS = ("test/cluster_acc@0.99", "test/cluster_accept@0.99", "test/cluster_acc@1.0",
           "test/rel_acc_latent", "test/rel_acc_data", "test/rel_acc_decoded", "test/component_acc_decoded",
           "test/mig", "test/dci_disentanglement")
BAD_INPUT = 2  # train.py's exit code for a bad config: every other run would fail the same way
SKIPPED = None  # execute()'s result for a run another process holds


def run_name(budget: int, seed: int) -> str:
    return f"budget{budget}-seed{seed}"


def command(dataset, out: Path, budget, seed, overrides, threads, preset=None) -> list[str]:
    """The train.py call for one run: resume a stopped one, else start it."""
    run_dir = out / run_name(budget, seed)
    script = [sys.executable, str(REPO / dataset / "train.py")]
    if (run_dir / "config.json").exists():
        return [*script, "--resume", str(run_dir)]
    return [*script, *(["--preset", preset] if preset else []), f"run.root={out}", f"run.name={run_name(budget, seed)}",
            f"run.seed={seed}", f"data.labelled_per_entity={budget}",
            *([f"run.threads={threads}"] if threads else []), *overrides]


def finished(out: Path, budget: int, seed: int) -> bool:
    return (out / run_name(budget, seed) / FINISHED).is_file()


def my_runs(budgets, seeds, shard: tuple[int, int]) -> list[tuple[int, int]]:
    """This shard's (budget, seed) pairs: every n-th of the whole grid from the i-th, whatever
    has finished, so every shard, started whenever, owns the same runs."""
    index, count = shard
    return [(b, s) for b in budgets for s in seeds][index::count]


def execute(dataset, out, budget, seed, overrides, threads, preset, holders: dict) -> int | None:
    """Train (or resume) one run unless another process holds it (then SKIPPED, and who holds
    it in holders[name]); the train.py exit code otherwise."""
    name = run_name(budget, seed)
    claim = FileLock(out / f".{name}.claim")
    holder = claim.acquire() or FileLock(out / name / LOCK).holder()
    if holder is not None:
        claim.release()
        holders[name] = holder
        return SKIPPED
    try:
        if finished(out, budget, seed):  # finished by another process since the plan was made
            return 0
        with open(out / f"{name}.log", "a") as handle:
            code = subprocess.run(command(dataset, out, budget, seed, overrides, threads, preset),
                                  stdout=handle, stderr=subprocess.STDOUT, cwd=REPO).returncode
        holder = FileLock(out / name / LOCK).holder()
        if code == BAD_INPUT and holder is not None:  # taken by hand between our check and it
            holders[name] = holder
            return SKIPPED
        return code
    finally:
        claim.release()


def collect(out: Path, seeds, budgets) -> list[dict]:
    rows = []
    for budget in budgets:
        for seed in seeds:
            path = out / run_name(budget, seed) / "metrics.json"
            if finished(out, budget, seed):
                metrics = json.loads(path.read_text())
                rows.append({"budget": budget, "seed": seed,
                             "fraction": metrics["labelled_images"] / metrics["train_images"],
                             **{k: metrics.get(k) for k in METRICS}})
    return rows


def summarise(rows: list[dict]) -> dict:
    """{metric: {budget: {"mean", "std", "n"}}} over seeds."""
    summary = {}
    for metric in METRICS:
        per_budget = {}
        for budget in sorted({r["budget"] for r in rows}):
            values = [r[metric] for r in rows if r["budget"] == budget and r[metric] is not None]
            if values:
                per_budget[budget] = {"mean": float(np.mean(values)),
                                      "std": float(np.std(values)), "n": len(values)}
        summary[metric] = per_budget
    return summary


def write_outputs(out: Path, rows, summary, dataset) -> None:
    keys = ["budget", "seed", "fraction", *METRICS]
    lines = [",".join(keys)] + [",".join("" if r[k] is None else str(r[k]) for k in keys)
                                for r in rows]
    (out / "sweep.csv").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plots.metric_vs_budget({out.name: rows}, METRICS, out / "sweep.png",
                           title=f"{dataset}: test metrics against the labelled budget")


def read_sweep(folder: Path) -> list[dict]:
    """The rows of a finished sweep's sweep.csv, numbers as numbers."""
    path = folder / "sweep.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; run the sweep (or --collect) there "
                         "first")
    with open(path, newline="") as handle:
        return [{k: (int(v) if k in ("budget", "seed") else float(v) if v else None)
                 for k, v in row.items()} for row in csv.DictReader(handle)]


def compare(folders: list[Path], out: Path, dataset: str) -> Path:
    """compare.png in out: the sweeps in folders, one colour each, labelled by folder name."""
    path = out / "compare.png"
    plots.metric_vs_budget({f.name: read_sweep(f) for f in folders}, METRICS, path,
                           title=f"{dataset}: test metrics against the labelled fraction")
    return path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    parser.add_argument("--preset", help="a preset of the dataset's config.py for every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 5, 10, 20],
                        help="labelled images per entity")
    parser.add_argument("--out", type=Path, help="default: runs/sweep-<dataset>")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once on this machine")
    parser.add_argument("--shard", help="i/n: run only the i-th of n shares of the grid "
                        "(default: the SLURM array task's share, else everything)")
    parser.add_argument("--collect", action="store_true", help="only gather results and plot")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="SWEEP_DIR",
                        help="only plot these finished sweeps together, in <out>/compare.png")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    if args.shard is None:
        args.shard = slurm_shard(parser)
    else:
        try:
            index, count = (int(v) for v in args.shard.split("/"))
            assert 1 <= index <= count
        except (ValueError, AssertionError):
            parser.error(f"--shard must be i/n with 1 <= i <= n, got '{args.shard}'")
        args.shard = (index - 1, count)
    if min(args.seeds) < 0 or max(args.seeds) >= 2**32:
        parser.error(f"--seeds must be in [0, 2^32), got {args.seeds}")
    if min(args.budgets) < 1:
        parser.error(f"--budgets must be >= 1 labelled image per entity, got {args.budgets}")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    return args


def slurm_shard(parser) -> tuple[int, int]:
    """(index, count) of this SLURM array task among the array's tasks; (0, 1) outside one."""
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" not in env:
        return 0, 1
    try:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
        index = task - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        assert 0 <= index < count
    except (KeyError, ValueError, AssertionError):
        parser.error("SLURM_ARRAY_TASK_ID/_COUNT/_MIN do not describe a task of a contiguous "
                     "array (e.g. --array=0-3); pass --shard i/n instead")
    return index, count


def main(argv=None) -> int:
    args = parse_args(argv)
    out = (args.out or REPO / "runs" / f"sweep-{args.dataset}").absolute()
    out.mkdir(parents=True, exist_ok=True)
    if args.compare:
        print(compare(args.compare, out, args.dataset))
        return 0
    todo = [(b, s) for b, s in my_runs(args.budgets, args.seeds, args.shard)
            if not finished(out, b, s)]
    threads = max(1, cpu_count() // args.jobs) if args.jobs > 1 else 0
    failed, holders = [], {}
    if not args.collect and todo:
        with ThreadPoolExecutor(args.jobs) as pool, \
                tqdm(total=len(todo), desc=f"sweep {args.dataset}", file=sys.stderr) as bar:
            futures = {pool.submit(execute, args.dataset, out, b, s, args.overrides, threads,
                                   args.preset, holders):
                       (b, s) for b, s in todo}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                (b, s), code = futures[future], future.result()
                bar.update()
                if code is SKIPPED:
                    tqdm.write(f"{run_name(b, s)} skipped: in use by {holders[run_name(b, s)]}",
                               file=sys.stderr)
                elif code != 0:
                    failed.append((run_name(b, s), code))
                    tqdm.write(f"{run_name(b, s)} failed (exit {code}); see "
                               f"{out / run_name(b, s)}.log", file=sys.stderr)
                if code == BAD_INPUT:  # the same config would fail every other run too
                    for pending in futures:
                        pending.cancel()
    rows = collect(out, args.seeds, args.budgets)
    if rows:
        write_outputs(out, rows, summarise(rows), args.dataset)
    for metric in ("test/cluster_acc@0.99", "test/rel_acc_decoded"):
        for budget, stats in summarise(rows).get(metric, {}).items():
            print(f"{metric} budget {budget}: {stats['mean']:.3f} +- {stats['std']:.3f} "
                  f"({stats['n']} seeds)", file=sys.stderr)
    if holders:
        print(f"{len(holders)} run(s) skipped, held by other processes: "
              + ", ".join(f"{name} ({who})" for name, who in sorted(holders.items()))
              + "; run the sweep again once they end", file=sys.stderr)
    if failed:
        bad_input = any(code == BAD_INPUT for _, code in failed)
        print(f"error: {len(failed)} run(s) failed: {', '.join(n for n, _ in failed)}"
              + ("; a bad config (exit 2): read the first log" if bad_input else ""),
              file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

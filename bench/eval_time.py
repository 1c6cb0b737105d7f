"""Where the final evaluation's time goes: `--evaluate` of a run folder, with a wall-clock
timer around each part (no profiler, so threads and the GIL behave as in a real run).

    python bench/eval_time.py DATASET RUN_DIR     # e.g. shapes3d runs/shapes3d-20261201-...

Prints one line per call of each part as it ends (parts on a background thread included),
then the imports, the evaluation in the process (`finish`) and the whole. It rewrites the run's
metrics.json, pictures and decoded.npz, as `--evaluate` does.
"""

import argparse
import functools
import importlib
import sys
import time
from pathlib import Path

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PARTS = {  # module -> the functions timed in it
    "train": ("build_state", "restore", "final_metrics", "evaluate", "finish"),
    "evaluation": ("encode", "latent", "factor_classifier", "decoded_pictures", "decoded",
                   "literature", "save_decoded"),
    "disentanglement": ("mig", "sap", "dci", "factor_vae_score", "beta_vae_score"),
    "log": ("write_pictures",),
    "dataset": ("load_data",),
}


def timed(module, name: str) -> None:
    """Replaces module.name by the same function that prints its wall time."""
    function = getattr(module, name)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            print(f"  {module.__name__}.{name}: {time.perf_counter() - began:.1f} s", flush=True)

    setattr(module, name, wrapper)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(p.parent.name for p in REPO.glob("*/train.py")))
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    train = importlib.import_module(f"{args.dataset}.train")
    from common import disentanglement, evaluation
    imported = time.perf_counter() - START
    modules = {"train": train, "evaluation": evaluation, "disentanglement": disentanglement,
               "log": train.log, "dataset": train.dataset}
    for key, names in PARTS.items():
        for name in names:
            timed(modules[key], name)
    print(f"imports: {imported:.1f} s")
    began = time.perf_counter()
    code = train.main(["--evaluate", str(args.run_dir)])
    print(f"main: {time.perf_counter() - began:.1f} s; whole: {time.perf_counter() - START:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())

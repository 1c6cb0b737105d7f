"""Helpers for the tests that run the real scripts: every dataset folder (any `*/train.py`),
its modules, and a tiny run of it (its config's `tiny` preset) in a temporary folder."""

import importlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = sorted(path.parent.name for path in REPO.glob("*/train.py"))


def script(folder: str) -> Path:
    return REPO / folder / "train.py"


def module(folder: str, name: str):
    """A dataset folder's own module: module("mpi3d", "loss") is mpi3d/loss.py."""
    return importlib.import_module(f"{folder}.{name}")


def shared_cache(tmp_path) -> Path:
    """The test session's cache folder (pytest's base temporary folder holds every test's
    tmp_path), shared by the tests' runs: the rendered stand-ins and the factor classifiers in
    it are named by their content and written atomically, so one test renders or trains what
    the others then read, as a user's runs share data_cache/."""
    return Path(tmp_path).parent / "shared-cache"


def tiny_config(folder: str, tmp_path, *overrides) -> dict:
    """A folder's tiny config resolved in-process (for tests that build its state themselves),
    data in the session's shared cache; overrides as on the command line."""
    from common import config as configlib

    config = module(folder, "config")
    return configlib.resolve(config.CONFIG, config.PRESETS, "tiny",
                             [f"data.cache_dir={shared_cache(tmp_path)}", *overrides])


def tiny(tmp_path, name, epochs=(1, 2), tensorboard=False) -> list[str]:
    """Arguments of a tiny run named `name` under tmp_path, with (warm-up, relational) epochs,
    data and classifiers in the session's shared cache; TensorBoard off unless asked for (its
    import alone takes seconds)."""
    return ["--preset", "tiny", f"run.root={tmp_path / 'runs'}", f"run.name={name}",
            "run.device=cpu", f"data.cache_dir={shared_cache(tmp_path)}",
            f"train.warmup_epochs={epochs[0]}", f"train.relational_epochs={epochs[1]}",
            f"run.tensorboard={str(tensorboard).lower()}"]


def run(folder: str, args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """<folder>/train.py with these arguments, as a user runs it, from the repository root."""
    return subprocess.run([sys.executable, str(script(folder)), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout, **kwargs)

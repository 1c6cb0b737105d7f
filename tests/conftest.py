"""`make test` runs the suite on every core with pytest-xdist (`pytest -n auto`).

Its workers share the machine: each worker, and every train.py it starts, takes its share of
the cores as torch threads (OMP_NUM_THREADS, which torch and every child process read), so
that N workers never ask for N times the machine; oversubscribed OpenMP threads spin and slow
each test several times over. `-n auto` counts the cores this process may use (its CPU
affinity and a cgroup CPU quota, as in a container), at most 8 workers (each holds about a
gigabyte).

The tests that train whole runs (marked `runs`: tens of seconds each, most of the suite's
time) come first, and idle workers take queued tests from busy ones (`--dist worksteal`, in
pytest.ini), so that no worker is left with long ones while the others have finished."""

import math
import os
from pathlib import Path


def usable_cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:  # cgroup v2: "max 100000" (no quota) or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores or 1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores or 1)


def pytest_xdist_auto_num_workers(config):
    return min(usable_cores(), 8)


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cores() // int(workers)))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("runs") is None)  # stable: file order

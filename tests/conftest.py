"""`make test` runs the suite on every core with pytest-xdist (`pytest -n auto`).

Its workers share the machine: each worker, and every train.py it starts, takes its share of
the cores as torch threads (OMP_NUM_THREADS, which torch and every child process read), so
that N workers never ask for N times the machine; oversubscribed OpenMP threads spin and slow
each test several times over. `-n auto` counts the cores this process may use
(`common.render.cpu_count`: its CPU affinity and a cgroup CPU quota, as in a container), at
most 8 workers (each holds about a gigabyte).

The tests that train whole runs (marked `runs`: tens of seconds each, most of the suite's
time) come first, and idle workers take queued tests from busy ones (`--dist worksteal`, in
pytest.ini), so that no worker is left with long ones while the others have finished."""

import os


def pytest_xdist_auto_num_workers(config):
    from common.render import cpu_count

    return min(cpu_count(), 8)


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        from common.render import cpu_count

        os.environ["OMP_NUM_THREADS"] = str(max(1, cpu_count() // int(workers)))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("runs") is None)  # stable: file order

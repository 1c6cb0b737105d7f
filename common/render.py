"""Rendering a procedural stand-in on every CPU core: chunks of rows in worker processes."""

import math
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

# Below this many chunks one process renders: starting workers (each imports torch) costs a
# few seconds, more than a small render takes.
MIN_PARALLEL_CHUNKS = 16


def cpu_count() -> int:
    """CPU cores this process may run on: its CPU affinity, and no more than a cgroup v2 CPU
    quota allows (a container's share of a larger machine)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:  # "max 100000" (no quota) or "<quota> <period>" in microseconds
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def render_rows(render, classes, image_shape, chunk: int, desc: str,
                workers: int = 0) -> np.ndarray:
    """render(classes[i:i + chunk]) for every chunk: a uint8 array (len(classes), *image_shape).

    render must be a module-level function (a worker imports it by name) that depends on its
    argument alone, so the images are the same for any number of workers. workers: processes
    to use; 0 = one per CPU core.
    """
    images = np.empty((len(classes), *image_shape), np.uint8)
    starts = range(0, len(classes), chunk)
    chunks = (classes[start:start + chunk] for start in starts)
    workers = min(workers or cpu_count(), len(starts))
    if len(starts) < MIN_PARALLEL_CHUNKS:
        workers = 1
    if not sys.stderr.isatty():  # a log file gets one line instead of a bar's redraws
        print(f"{desc}: {len(classes)} images, {workers} process(es)", file=sys.stderr)
    with tqdm(total=len(classes), desc=desc, unit="img", file=sys.stderr,
              disable=not sys.stderr.isatty()) as bar:
        if workers == 1:
            blocks = map(render, chunks)
            _fill(images, starts, blocks, bar)
        else:
            # spawn, not fork: the parent holds torch's thread pools, which a fork copies broken
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                _fill(images, starts, pool.imap(render, chunks), bar)
    return images


def _fill(images, starts, blocks, bar) -> None:
    for start, block in zip(starts, blocks):
        images[start:start + len(block)] = block
        bar.update(len(block))

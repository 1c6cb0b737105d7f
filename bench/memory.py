"""Peak-memory readings shared by the reader benchmarks (Linux)."""

import resource


def peak_rss_mb() -> float:
    """Peak RSS of this process; Linux carries a parent's peak into a child across fork/exec,
    so the benchmarks measure in a child started by a small launcher."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def vm_hwm_mb() -> float:
    """Peak RSS of this process image alone (reset at exec), as a cross-check."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

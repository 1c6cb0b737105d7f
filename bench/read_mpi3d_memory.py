"""Peak memory of mpi3d.dataset.read_rows on a full-size MPI3D toy file.

Writes a stored npz in the real layout with all 1,036,800 rows (12.7 GB as the reader sees
it) but only the selected rows' bytes on disk: they hold procedurally rendered images and
everything between them is a hole of a sparse file, which reads as zeros and takes no disk
(write_sparse_npz). Then, in a fresh process that only reads, memory-maps the file, gathers
the subset and reports read time and peak RSS, and checks the rows against the renderer.

The launcher imports nothing heavy and the writer runs in a process of its own: Linux carries
a parent's peak RSS into a child's ru_maxrss across fork/exec, so the parent that starts the
reader must stay small. The file is deleted afterwards unless --keep names a folder.

    python bench/read_mpi3d_memory.py [--axis-step 4] [--keep DIR]

The default subset (mpi3d/config.py), axis step 4: every colour, shape, size, camera height and
background, and horizontal and vertical axis indices 0, 4, ..., 36: 6*6*2*3*3*10*10 = 64,800
images.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from memory import peak_rss_mb, vm_hwm_mb  # bench/memory.py (this folder is on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK_ROWS = 1000  # rows re-rendered to check the read; the rest are checked for data


def subset(axis_step):
    """Sorted flat indices of the benchmark subset."""
    import numpy as np
    from mpi3d import dataset as md
    axis = range(0, 40, axis_step)
    mesh = np.meshgrid(range(6), range(6), range(2), range(3), range(3), axis, axis,
                       indexing="ij")
    classes = np.stack([m.ravel() for m in mesh], axis=1)
    return np.sort(classes @ np.array(md.factor_bases("toy")))


def write_only(path, axis_step):
    """Child process: render the subset and write the sparse full-size file."""
    from mpi3d import dataset as md
    start = time.perf_counter()
    wanted = subset(axis_step)
    images = md.render(md.classes_from_flat(wanted, "toy"))
    render_s = time.perf_counter() - start
    md.write_sparse_npz(path, md.num_images("toy"), wanted, images)
    print(json.dumps({"render_s": round(render_s, 1),
                      "write_s": round(time.perf_counter() - start - render_s, 1),
                      "writer_peak_rss_mb": round(peak_rss_mb(), 1)}))


def read_only(path, axis_step):
    """Child process: read the subset, record peak RSS, then check the rows were right."""
    import numpy as np
    from mpi3d import dataset as md
    wanted = subset(axis_step)
    before = peak_rss_mb()
    start = time.perf_counter()
    images, classes = md.read_rows(path, wanted, "toy")
    read_s = time.perf_counter() - start
    peak, hwm = peak_rss_mb(), vm_hwm_mb()
    sample = np.random.default_rng(0).choice(len(wanted), min(CHECK_ROWS, len(wanted)),
                                             replace=False)
    correct = (np.array_equal(classes, md.classes_from_flat(wanted, "toy"))
               and bool(images.reshape(len(images), -1).max(axis=1).all())  # no hole was read
               and np.array_equal(images[sample], md.render(classes[sample])))
    print(json.dumps({"rows_selected": len(wanted), "read_s": round(read_s, 2),
                      "rss_before_read_mb": round(before, 1), "peak_rss_mb": round(peak, 1),
                      "vm_hwm_mb": round(hwm, 1), "images_mb": round(images.nbytes / 2**20, 1),
                      "correct": bool(correct)}))


def run_child(mode, path, axis_step):
    child = subprocess.run([sys.executable, __file__, mode, path, "--axis-step", str(axis_step)],
                           check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(child.stdout)


def measure(folder, axis_step):
    path = os.path.join(folder, f"mpi3d_toy_sparse_step{axis_step}.npz")
    written = {"write_s": None} if os.path.exists(path) else run_child("--write-only", path,
                                                                       axis_step)
    read = run_child("--read-only", path, axis_step)
    return {"rows_in_file": 1036800, "file_logical_gb": round(os.path.getsize(path) / 1e9, 2),
            "file_on_disk_mb": round(os.stat(path).st_blocks * 512 / 2**20, 1),
            "launcher_peak_rss_mb": round(peak_rss_mb(), 1), **written, **read}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axis-step", type=int, default=4,
                        help="horizontal and vertical axis indices range(0, 40, step)")
    parser.add_argument("--keep", metavar="DIR", help="write (or reuse) the file in DIR")
    parser.add_argument("--write-only", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--read-only", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only or args.read_only:
        sys.path.insert(0, ROOT)
        if args.write_only:
            return write_only(args.write_only, args.axis_step)
        return read_only(args.read_only, args.axis_step)
    if not 1 <= args.axis_step <= 40:
        parser.error("--axis-step must be in 1..40")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        result = measure(args.keep, args.axis_step)
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = measure(folder, args.axis_step)
    for key, value in result.items():
        print(f"{key:<22} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Peak memory of shapes3d.dataset.read_rows on a full-size Shapes3D file.

Writes an h5 in the real layout (write_sparse_h5): all 480,000 labels, and in `images`
procedurally rendered pictures at the subset's rows only. The chunks holding no subset row are
never written, so the file is small on disk; reading such rows would return zeros without disk
IO, but the subset's reads only touch written chunks, which are gzip-decompressed like the real
file's. Then, in a fresh process that only reads, selects the subset and reports rows, read
time and peak RSS (ru_maxrss) as JSON. Writer and reader run in processes of their own and
this launcher imports neither numpy nor torch: Linux carries a parent's peak RSS into a
child's ru_maxrss across fork/exec, so the parent that starts the reader must stay small.

    python bench/read_shapes3d_memory.py [--keep DIR]
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



def subset(floor_hue=range(10), wall_hue=range(10), object_hue=range(10),
           scale=(0, 1, 3, 4, 6, 7), shape=range(4), orientation=(0, 7, 14)):
    """Sorted flat indices of every combination of the given factor indices; by default
    shapes3d/config.py's subset: 10 * 10 * 10 * 6 * 4 * 3 = 72,000 images."""
    import numpy as np
    from shapes3d import dataset as ds
    mesh = np.meshgrid(floor_hue, wall_hue, object_hue, scale, shape, orientation,
                       indexing="ij")
    return np.sort(np.stack([m.ravel() for m in mesh], axis=1) @ np.array(ds.FACTOR_BASES))


def write_only(path, factors):
    """Child process: render the subset, write the file, report how long it took."""
    from shapes3d import dataset as ds
    start = time.perf_counter()
    wanted = subset(**factors)
    ds.write_sparse_h5(path, wanted, ds.render(ds.classes_from_flat(wanted)))
    print(json.dumps({"write_s": round(time.perf_counter() - start, 1),
                      "writer_peak_rss_mb": round(peak_rss_mb(), 1)}))


def read_only(path, factors):
    """Child process: read the subset, record peak RSS, then check the rows were right."""
    import numpy as np
    from shapes3d import dataset as ds
    wanted = subset(**factors)
    before = peak_rss_mb()
    start = time.perf_counter()
    images, classes = ds.read_rows(path, wanted)
    read_s = time.perf_counter() - start
    peak, hwm = peak_rss_mb(), vm_hwm_mb()
    correct = (np.array_equal(classes, ds.classes_from_flat(wanted))
               and np.array_equal(images, ds.render(classes)))
    print(json.dumps({"rows_selected": len(wanted), "read_s": round(read_s, 2),
                      "rss_before_read_mb": round(before, 1), "peak_rss_mb": round(peak, 1),
                      "vm_hwm_mb": round(hwm, 1), "images_mb": round(images.nbytes / 2**20, 1),
                      "correct": bool(correct)}))


def run_child(mode, path, factors):
    child = subprocess.run([sys.executable, __file__, mode, path, "--factors",
                            json.dumps(factors)], check=True, capture_output=True, text=True,
                           cwd=ROOT)
    return json.loads(child.stdout)


def measure(folder, factors=None):
    """Write (unless already there) and read the full-size file in `folder`; `factors` are
    keyword arguments of subset() (default: its defaults)."""
    factors = factors or {}
    path = os.path.join(folder, "3dshapes_sparse_full.h5")
    written = ({"write_s": None} if os.path.exists(path)
               else run_child("--write-only", path, factors))
    read = run_child("--read-only", path, factors)
    return {"rows_in_file": 480000, "file_mb": round(os.path.getsize(path) / 2**20, 1),
            "images_uncompressed_mb": round(480000 * 64 * 64 * 3 / 2**20, 1),
            "launcher_peak_rss_mb": round(peak_rss_mb(), 1), **written, **read}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="write (or reuse) the file in DIR")
    parser.add_argument("--factors", type=json.loads, default={}, help=argparse.SUPPRESS)
    parser.add_argument("--write-only", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--read-only", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only or args.read_only:
        sys.path.insert(0, ROOT)
        if args.write_only:
            return write_only(args.write_only, args.factors)
        return read_only(args.read_only, args.factors)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        result = measure(args.keep)
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = measure(folder)
    for key, value in result.items():
        print(f"{key:<24} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Peak memory of dsprites.dataset.read_rows on a full-size dSprites file.

Writes a compressed npz in the real layout holding every procedurally rendered image (the
imgs member is streamed in chunks, so the 3 GB array never exists in memory), then, in a
fresh process that only reads, selects the 12,150-image weak-disentanglement subset and
reports file size, read time and peak RSS. The writer runs in a process of its own too:
Linux carries a parent's peak RSS into a child's ru_maxrss across fork/exec, so the
parent that starts the reader must stay small.

    python bench/read_dsprites_memory.py [--rows 737280] [--keep DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

from memory import peak_rss_mb, vm_hwm_mb  # bench/memory.py (this folder is on sys.path)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dsprites import dataset as ds  # noqa: E402

WRITE_CHUNK = 8192
WEAK_POSITIONS = [*range(0, 5), *range(13, 18), *range(27, 32)]


def weak_subset():
    """Flat indices of the weak-disentanglement subset: 3 * 3 * 6 * 15 * 15 = 12,150 images."""
    mesh = np.meshgrid([0], range(3), [2, 3, 4], [0, 1, 2, 37, 38, 39],
                       WEAK_POSITIONS, WEAK_POSITIONS, indexing="ij")
    classes = np.stack([m.ravel() for m in mesh], axis=1)
    return np.sort(classes @ np.array(ds.FACTOR_BASES))


def write_file(path, rows):
    """The first `rows` images in real index order, in the real layout, written atomically."""
    tmp = path + ".tmp"
    header = {"descr": "|u1", "fortran_order": False, "shape": (rows, *ds.IMAGE_SHAPE)}
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("imgs.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for start in range(0, rows, WRITE_CHUNK):
                flat = np.arange(start, min(start + WRITE_CHUNK, rows))
                member.write(ds.render(ds.classes_from_flat(flat)).tobytes())
        classes = ds.classes_from_flat(np.arange(rows))
        values = np.stack([g[classes[:, i]] for i, g in enumerate(ds.factor_values())], axis=1)
        for key, array in (("latents_classes", classes), ("latents_values", values)):
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
        # layout fidelity only: the reader never opens this member
        with zf.open("metadata.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, ds._metadata(), allow_pickle=True)
    os.replace(tmp, path)


def write_only(path, rows):
    """Child process: write the file and report how long it took."""
    start = time.perf_counter()
    write_file(path, rows)
    print(json.dumps({"write_s": round(time.perf_counter() - start, 1),
                      "writer_peak_rss_mb": round(peak_rss_mb(), 1)}))


def read_only(path, rows):
    """Child process: read the subset, record peak RSS, then check the rows were right."""
    wanted = weak_subset()
    wanted = wanted[wanted < rows]
    before = peak_rss_mb()
    start = time.perf_counter()
    imgs, classes = ds.read_rows(path, wanted)
    read_s = time.perf_counter() - start
    peak, hwm = peak_rss_mb(), vm_hwm_mb()
    correct = (np.array_equal(classes, ds.classes_from_flat(wanted))
               and np.array_equal(imgs, ds.render(classes)))
    print(json.dumps({"rows_selected": len(wanted), "read_s": round(read_s, 2),
                      "rss_before_read_mb": round(before, 1), "peak_rss_mb": round(peak, 1),
                      "vm_hwm_mb": round(hwm, 1), "correct": bool(correct)}))


def run_child(mode, path, rows):
    child = subprocess.run([sys.executable, __file__, mode, path, "--rows", str(rows)],
                           check=True, capture_output=True, text=True)
    return json.loads(child.stdout)


def measure(folder, rows):
    path = os.path.join(folder, f"dsprites_procedural_full_{rows}.npz")
    written = {"write_s": None} if os.path.exists(path) else run_child("--write-only", path, rows)
    read = run_child("--read-only", path, rows)
    return {"rows_in_file": rows, "file_mb": round(os.path.getsize(path) / 2**20, 1),
            "imgs_uncompressed_mb": round(rows * 64 * 64 / 2**20, 1),
            "launcher_peak_rss_mb": round(peak_rss_mb(), 1), **written, **read}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ds.NUM_IMAGES)
    parser.add_argument("--keep", metavar="DIR", help="write (or reuse) the file in DIR")
    parser.add_argument("--write-only", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--read-only", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only:
        return write_only(args.write_only, args.rows)
    if args.read_only:
        return read_only(args.read_only, args.rows)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        result = measure(args.keep, args.rows)
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = measure(folder, args.rows)
    for key, value in result.items():
        print(f"{key:<22} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

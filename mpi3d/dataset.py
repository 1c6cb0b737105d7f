"""MPI3D data: the factor grids of the four variants, a memory-mapping reader for the real
npz files, and a procedural stand-in of the toy scene.

The real files (github.com/rr-learning/disentanglement_dataset) hold one array, `images`
(N, 64, 64, 3) uint8, and no labels: row i shows the factor combination whose flat index is i
(last factor fastest), so labels come from the index alone. The toy, realistic and real files
hold N = 1,036,800 images (12.7 GB); the real-world complex file 460,800 (5.7 GB).

`read_rows` never holds the whole array. A member stored uncompressed is memory-mapped in
place; a compressed one is unpacked once into an uncompressed .npy in a cache folder, which is
then memory-mapped. With no file, `load_images` renders the requested rows of the toy scene,
caches them in the real layout and reads them back through the same reader.
"""

import hashlib
import io
import os
import shutil
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import data as datalib
from common.augment import mask_square, salt_and_pepper
from common.checkpoint import atomic_write
from common.entities import EntitySpace
from common.errors import UserError
from common.render import render_rows

FACTOR_NAMES = ("object_color", "object_shape", "object_size", "camera_height",
                "background_color", "horizontal_axis", "vertical_axis")
_GRID = (6, 6, 2, 3, 3, 40, 40)
# variant -> (file name as published, factor sizes in FACTOR_NAMES order)
VARIANTS = {
    "toy": ("mpi3d_toy.npz", _GRID),
    "realistic": ("mpi3d_realistic.npz", _GRID),
    "real": ("mpi3d_real.npz", _GRID),
    # real-world complex shapes: 4 colours and 4 everyday objects (the published name)
    "complex": ("real3d_complicated_shapes_ordered.npz", (4, 4, 2, 3, 3, 40, 40)),
}
IMAGE_SHAPE = (64, 64, 3)
ROW_BYTES = 64 * 64 * 3
SOURCE = "github.com/rr-learning/disentanglement_dataset"

# Rows gathered per memory map. Each map is closed before the next, so the mapped file pages
# that count towards RSS stay near this many rows however large the subset.
_GATHER_ROWS = 1024
_STREAM_PIECE = 4 << 20
_RENDER_CHUNK = 128


def _check_variant(variant):
    if variant not in VARIANTS:
        raise UserError(f"unknown MPI3D variant {variant!r}; set data.variant to one of "
                        f"{', '.join(repr(v) for v in VARIANTS)}")
    return variant


def factor_sizes(variant):
    return VARIANTS[_check_variant(variant)][1]


def factor_bases(variant):
    """Strides of the flat index: flat = classes @ factor_bases(variant) (last factor fastest)."""
    sizes = factor_sizes(variant)
    return tuple(int(np.prod(sizes[i + 1:], dtype=np.int64)) for i in range(len(sizes)))


def num_images(variant):
    return int(np.prod(factor_sizes(variant), dtype=np.int64))


def classes_from_flat(flat_indices, variant):
    """(N,) flat indices -> (N, 7) int64 factor indices; inverse of classes @ factor_bases."""
    flat = _check_flat(flat_indices, variant)
    bases = np.array(factor_bases(variant), np.int64)
    return (flat[:, None] // bases) % np.array(factor_sizes(variant), np.int64)


# ---------------------------------------------------------------- procedural stand-in
#
# A flat-shaded 2-D drawing of the toy scene: a grey base at the bottom, a rod from it to the
# arm's tip, and the object held at the tip. horizontal_axis swings the tip left-right (on a
# shallow arc), vertical_axis raises it. The camera height shifts the scene, foreshortens the
# vertical motion and sets how much of the object's top is seen (its elevation). Every object
# is drawn inside the square [-r, r]^2 about the tip, r = half its size, and the tip's range
# (_SWING_PX, _RAISE_PX, _ARC_PX, CAMERAS) keeps it at least r + 3 px from every edge, so no
# object is ever cut off. Pictures are drawn at _SS x _SS samples per pixel and averaged, so
# small objects keep their silhouettes and sub-pixel moves show. Deterministic: no randomness.

RENDER_VERSION = "procedural-v1"
_SS = 2
OBJECT_COLOURS = np.array([  # white, green, red, blue, brown, olive
    [250, 250, 250], [80, 230, 50], [230, 30, 35], [35, 75, 230], [115, 65, 30], [150, 160, 20],
], np.float32)
BACKGROUNDS = np.array([  # purple, sea green, salmon
    [110, 60, 150], [40, 128, 98], [250, 140, 120],
], np.float32)
_ROD_RGB = np.array([120, 120, 128], np.float32)
_BASE_RGB = np.array([55, 55, 60], np.float32)
HALF_SIZES = (5.75, 9.5)  # object half-widths in px: small 11.5 px, large 19 px across
# camera height -> (scene shift down in px, vertical scale of the arm's motion, elevation)
CAMERAS = ((4.0, 0.75, 0.55), (0.0, 1.0, 0.38), (-4.0, 0.85, 0.22))  # top, center, bottom
_SWING_PX = 19.0  # horizontal_axis: tip x = 32 +- this
_RAISE_PX = 14.0  # vertical_axis: tip y = 32 + shift -+ this * vertical scale
_ARC_PX = 3.0  # the tip drops this much at either end of the swing
_ROD_HALF_WIDTH = 1.6


def render(classes):
    """(N, 7) int factor indices on the toy grid -> (N, 64, 64, 3) uint8 procedural images."""
    classes = _check_classes(np.asarray(classes), "render(classes)", "toy")
    images = np.empty((len(classes), *IMAGE_SHAPE), np.uint8)
    for start in range(0, len(classes), _RENDER_CHUNK):
        canvas, _ = _draw(classes[start:start + _RENDER_CHUNK])
        n = len(canvas)
        pixels = canvas.reshape(n, 64, _SS, 64, _SS, 3).mean(axis=(2, 4))
        images[start:start + n] = np.clip(np.rint(pixels), 0, 255)
    return images


def _scene(classes):
    """Per-image drawing parameters, each (N, 1, 1) float32 (colours (N, 3))."""
    axis = np.linspace(-1.0, 1.0, 40)
    shift, vscale, elevation = (np.array(CAMERAS)[classes[:, 3]].T)
    u, w = axis[classes[:, 5]], axis[classes[:, 6]]
    column = lambda a: np.asarray(a, np.float32)[:, None, None]  # noqa: E731
    return {
        "colour": OBJECT_COLOURS[classes[:, 0]],
        "background": BACKGROUNDS[classes[:, 4]],
        "half": column(np.array(HALF_SIZES)[classes[:, 2]]),
        "elevation": column(elevation),
        "tip_x": column(32.0 + _SWING_PX * u),
        "tip_y": column(32.0 + shift + _ARC_PX * u * u - _RAISE_PX * vscale * w),
        "base_y": column(59.0 + shift),
    }


def _draw(classes, margin=0):
    """Supersampled canvas (N, H, W, 3) float32 and object mask (N, H, W) bool, where
    H = W = (64 + 2 margin) * _SS: the picture plus `margin` px beyond each edge."""
    p = _scene(classes)
    n = len(classes)
    coords = (np.arange((64 + 2 * margin) * _SS, dtype=np.float32) + 0.5) / _SS - margin
    x, y = coords[None, None, :], coords[None, :, None]
    canvas = np.empty((n, len(coords), len(coords), 3), np.float32)
    canvas[:] = p["background"][:, None, None, :]

    base = (np.abs(x - 32.0) <= 8.0) & (y >= p["base_y"])
    canvas[base] = _BASE_RGB
    rod = _segment_distance(x, y, (32.0, p["base_y"]), (p["tip_x"], p["tip_y"]))
    on_rod = rod <= _ROD_HALF_WIDTH
    rod_shade = 1.0 - 0.45 * (rod / _ROD_HALF_WIDTH) ** 2  # a round rod, lit along its axis
    canvas = np.where(on_rod[..., None], _ROD_RGB * rod_shade[..., None], canvas)

    mask = np.zeros((n, len(coords), len(coords)), bool)
    shade = np.zeros(mask.shape, np.float32)
    dx, dy = x - p["tip_x"], y - p["tip_y"]
    for kind, draw in enumerate(_SHAPES):
        rows = np.flatnonzero(classes[:, 1] == kind)
        if len(rows):
            mask[rows], shade[rows] = draw(dx[rows], dy[rows], p["half"][rows],
                                           p["elevation"][rows])
    shade = np.where(mask & ~_eroded(mask), 0.55 * shade, shade)  # a dark outline
    colour = p["colour"][:, None, None, :] * shade[..., None]
    return np.where(mask[..., None], colour, canvas), mask


def _eroded(mask):
    inner = mask.copy()
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[:, :, 1:] &= mask[:, :, :-1]
    inner[:, :, :-1] &= mask[:, :, 1:]
    return inner


def _segment_distance(x, y, a, b):
    """Distance from each (x, y) to the segment a-b; a, b are (x, y) pairs of arrays."""
    ax, ay = a
    bx, by = b
    ux, uy = bx - ax, by - ay
    t = np.clip(((x - ax) * ux + (y - ay) * uy) / np.maximum(ux * ux + uy * uy, 1e-6), 0, 1)
    return np.hypot(x - ax - t * ux, y - ay - t * uy)


def _in_triangle(x, y, p0, p1, p2):
    def side(a, b):
        return (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])
    s0, s1, s2 = side(p0, p1), side(p1, p2), side(p2, p0)
    return ((s0 >= 0) & (s1 >= 0) & (s2 >= 0)) | ((s0 <= 0) & (s1 <= 0) & (s2 <= 0))


def _lambert(s):
    """Shade of a surface curving round a vertical axis; s in [-1, 1] is the horizontal part of
    its normal. The light comes from the front left."""
    return 0.3 + 0.7 * np.maximum(0.0, -0.55 * s + 0.835 * np.sqrt(np.maximum(0.0, 1 - s * s)))


# Each shape: (dx, dy) pixel offsets from the tip, r the half size, e the camera elevation
# (0: side view, 1: from above) -> (inside mask, shade). Shades are brightness factors.


def _cone(dx, dy, r, e):
    b = (0.2 + 0.6 * e) * r  # half-height of the elliptical base; its curve shows even when low
    base_y = r - b
    t = (dy + r) / (base_y + r)  # 0 at the apex, 1 on the base's long axis
    half = r * np.clip(t, 0.0, 1.0)
    sides = (t >= 0) & (t <= 1) & (np.abs(dx) <= half)
    base = (dy >= base_y) & ((dx / r) ** 2 + ((dy - base_y) / b) ** 2 <= 1)
    return sides | base, _lambert(np.clip(dx / np.maximum(half, 1e-3), -1.0, 1.0))


def _cube(dx, dy, r, e):
    d, t = 0.35 * r, 0.9 * e * r  # the receding edges go right by d and up by t
    front = (dx >= -r) & (dx <= r - d) & (dy >= -r + t) & (dy <= r)
    s = (-r + t - dy) / t  # depth along the receding edge, for the top face
    top = (s >= 0) & (s <= 1) & (dx - s * d >= -r) & (dx - s * d <= r - d)
    s = (dx - (r - d)) / d  # the same, for the side face
    side = (s >= 0) & (s <= 1) & (dy + s * t >= -r + t) & (dy + s * t <= r)
    return front | top | side, np.where(front, 0.75, np.where(top, 1.0, 0.5)).astype(np.float32)


def _cylinder(dx, dy, r, e):
    w = 0.85 * r
    b = 0.8 * e * w  # half-height of the end ellipses
    top_y, bottom_y = -r + b, r - b
    ex = (dx / w) ** 2
    top = ex + ((dy - top_y) / b) ** 2 <= 1
    body = (ex <= 1) & (dy >= top_y) & ((dy <= bottom_y) | (ex + ((dy - bottom_y) / b) ** 2 <= 1))
    shade = np.where(top, 1.0, 0.85 * _lambert(np.clip(dx / w, -1.0, 1.0)))
    return top | body, shade.astype(np.float32)


def _hexagonal(dx, dy, r, e):
    # A hexagonal prism lying with its axis towards the camera: a flat-topped hexagon in
    # front, the prism's upper faces seen above it.
    t = 0.45 * e * r  # with the hexagon's height sqrt(3) r, the whole stays within 2 r
    rel = dy - t / 2  # the front hexagon's centre sits t/2 below the tip
    ax = np.abs(dx)
    half = np.minimum(0.866 * r, 1.732 * (r - ax))  # the hexagon's half-height at dx
    rim_px = 0.8
    inner = np.minimum(0.866 * r - rim_px, 1.732 * (r - rim_px / 0.866 - ax))
    front = np.abs(rel) <= half
    swept = (ax <= r) & (rel >= -half - t) & (rel <= half)
    upper = np.where(ax <= r / 2, 1.0, np.where(dx < 0, 0.9, 0.55))
    shade = np.where(front, np.where(np.abs(rel) <= inner, 0.78, 0.45), upper)
    return swept, shade.astype(np.float32)


def _pyramid(dx, dy, r, e):
    # A square pyramid turned so one base corner points at the camera: two faces show, split
    # by the ridge from the apex down to that corner.
    c = (0.3 + e) * r  # the side corners stand above the front one: a V-shaped bottom
    apex, front = (0.0, -r), (0.3 * r, r)
    left, right = (-r, r - c), (r, r - 0.6 * c)
    lit = _in_triangle(dx, dy, apex, left, front)
    dark = _in_triangle(dx, dy, apex, front, right)
    ridge = _segment_distance(dx, dy, apex, front) <= 0.45
    shade = np.where(ridge, 0.3, np.where(lit, 1.0, 0.45))
    return lit | dark, shade.astype(np.float32)


def _sphere(dx, dy, r, e):
    u, v = dx / r, dy / r
    rho2 = u * u + v * v
    nz = np.sqrt(np.maximum(0.0, 1 - rho2))
    light = np.maximum(0.0, -0.45 * u - 0.5 * v + 0.74 * nz)
    return rho2 <= 1, (0.25 + 0.75 * light).astype(np.float32)


_SHAPES = (_cone, _cube, _cylinder, _hexagonal, _pyramid, _sphere)  # object_shape order


# ---------------------------------------------------------------- reading the npz


class _BadFile(Exception):
    """A problem with the file; _read_rows adds the path and the fix."""


def read_rows(path, flat_indices, variant, rows=None, cache_dir=None):
    """Rows of an MPI3D npz whose flat index is in `flat_indices`, sorted by flat index.

    Returns (images (n, 64, 64, 3) uint8, classes (n, 7) int64). A real file holds every
    image of its variant, row i being flat index i, and that is what training always reads
    (rows=None). `rows` is for small files in the same layout written by write_npz (tests and
    the stand-in cache): the sorted flat indices the file's rows hold, in order.

    A compressed `images` member is unpacked once into `cache_dir` (default: the file's own
    folder) as an uncompressed .npy that later calls memory-map; it needs N * 12,288 bytes of
    disk. Never unpickles anything, never holds the whole array.
    """
    return _read_rows(path, flat_indices, variant, rows, cache_dir, _real_fix(variant))


def _real_fix(variant):
    return (f"download {VARIANTS[_check_variant(variant)][0]} from {SOURCE} and set data.path "
            f"to it, or set data.path='' to use the procedural stand-in (variant 'toy')")


def _read_rows(path, flat_indices, variant, rows, cache_dir, fix):
    wanted = np.unique(_check_flat(flat_indices, variant))
    held = _check_held_rows(rows, variant)
    try:
        _check_path(path)
        with _open_zip(path) as zf:
            info = _images_member(zf)
            start, header_len, n_rows = _inspect(path, zf, info)
            _check_row_count(n_rows, variant, held)
            file_rows = wanted if held is None else _find_rows(held, wanted, variant)
            if info.compress_type == zipfile.ZIP_STORED:
                source, offset = path, start + header_len
            else:  # the unpacked copy is the member's .npy bytes, header first
                source, offset = _unpacked(path, zf, info, cache_dir), header_len
        images = _gather(source, offset, file_rows)
    except _BadFile as err:
        raise UserError(f"MPI3D file {path}: {err}; {fix}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
            RuntimeError) as err:
        module = "" if type(err).__module__ == "builtins" else type(err).__module__ + "."
        raise UserError(f"MPI3D file {path} is corrupt or unreadable "
                        f"({module}{type(err).__name__}: {err}); {fix}") from None
    return images, classes_from_flat(wanted, variant)


def _check_path(path):
    if not os.path.exists(path):
        raise _BadFile("does not exist")
    if not os.path.isfile(path):
        raise _BadFile("is not a file")
    if os.path.getsize(path) == 0:
        raise _BadFile("is empty (0 bytes)")


def _open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            starts_like_zip = f.read(4) == b"PK\x03\x04"
        if starts_like_zip:
            raise _BadFile("is truncated (a zip start but no end record; the download or "
                           "copy stopped early)") from None
        raise _BadFile("is not an npz (zip) file") from None


def _images_member(zf):
    members = {name.removesuffix(".npy"): zf.getinfo(name) for name in zf.namelist()}
    if "images" not in members:
        raise _BadFile(f"has no 'images' array; found {sorted(members) or 'no arrays'}")
    info = members["images"]
    if info.flag_bits & 0x1:
        raise _BadFile("its images member is encrypted")
    return info


def _data_start(path, info):
    """Byte offset in the zip file where the member's data (its .npy bytes) begins."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise _BadFile("the zip header of its images member is damaged")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _inspect(path, zf, info):
    """Check the images member's .npy header.

    Returns (where the member's bytes start in the zip file, .npy header length, rows)."""
    start = _data_start(path, info)
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            f.seek(start)
            n_rows, header_len = _read_header(f)
    else:
        with zf.open(info) as member:
            n_rows, header_len = _read_header(member)
    expected = header_len + n_rows * ROW_BYTES
    if info.file_size != expected:
        raise _BadFile(f"its images member holds {info.file_size} bytes but its header "
                       f"promises {n_rows} images ({expected} bytes)")
    if info.compress_type == zipfile.ZIP_STORED and os.path.getsize(path) < start + expected:
        raise _BadFile("is truncated (the images end past the end of the file)")
    return start, header_len, n_rows


def _read_header(f):
    """Parse and check the .npy header at f's position; return (rows, header length)."""
    begin = f.tell()
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _BadFile(f"images is .npy format version {version}; expected 1.0 or 2.0")
    except (ValueError, TypeError) as err:
        raise _BadFile(f"images has no valid .npy header ({err})") from None
    if dtype != np.uint8:
        raise _BadFile(f"images has dtype {dtype}, expected uint8")
    if len(shape) != 4 or tuple(shape[1:]) != IMAGE_SHAPE:
        raise _BadFile(f"images has shape {shape}, expected (N, 64, 64, 3)")
    if fortran:
        raise _BadFile("images is stored in Fortran order; expected C order")
    return shape[0], f.tell() - begin


def _check_row_count(n_rows, variant, held):
    if held is not None:
        if n_rows != len(held):
            raise _BadFile(f"has {n_rows} images but rows= lists {len(held)} flat indices")
        return
    expected = num_images(variant)
    if n_rows == expected:
        return
    message = (f"has {n_rows} images but variant '{variant}' has {expected} "
               f"(sizes {list(factor_sizes(variant))})")
    matches = [v for v in VARIANTS if num_images(v) == n_rows]
    if len(matches) == 1:
        message += (f"; set data.variant='{matches[0]}' (sizes "
                    f"{list(factor_sizes(matches[0]))}) if this is that file")
    elif matches:
        message += (f"; that is the size of variants {', '.join(repr(m) for m in matches)}: set "
                    f"data.variant to the one this file is")
    else:
        message += "; no variant has that many, so the file is incomplete or not MPI3D"
    raise _BadFile(message)


def _find_rows(held, wanted, variant):
    """File row of each wanted flat index, in a file whose rows hold `held` (sorted)."""
    pos = np.minimum(np.searchsorted(held, wanted), max(len(held) - 1, 0))
    found = held[pos] == wanted if len(held) else np.zeros(len(wanted), bool)
    if not found.all():
        absent = wanted[~found]
        first = dict(zip(FACTOR_NAMES, classes_from_flat(absent[:1], variant)[0].tolist()))
        raise _BadFile(f"{len(absent)} of the {len(wanted)} requested images are not in the "
                       f"file, e.g. flat index {absent[0]} {first}")
    return pos


def _unpacked(path, zf, info, cache_dir):
    """Path of an uncompressed .npy copy of the compressed images member, made once.

    The name carries the member's CRC-32 and size, so a changed file gets a fresh copy; the
    copy is written to a temporary name and renamed, so a finished name is a whole copy.
    """
    folder = Path(cache_dir) if cache_dir else Path(path).absolute().parent
    cache = folder / f"{Path(path).stem}_images_{info.CRC:08x}_{info.file_size}.npy"
    if cache.is_file() and cache.stat().st_size == info.file_size:
        return cache
    need = info.file_size
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError as err:
        raise UserError(f"cannot use {folder} to unpack the compressed images of {path} "
                        f"({err}); set data.cache_dir to a writable folder") from None
    if free < need:
        raise UserError(f"MPI3D file {path} stores its images compressed; reading them needs an "
                        f"unpacked copy of {_size(need)} ({need} bytes) in {folder}, which has "
                        f"only {_size(free)} free; free some space or set data.cache_dir to a "
                        f"disk with room")
    print(f"mpi3d: {path} stores its images compressed, so they cannot be memory-mapped; "
          f"unpacking them once to {cache} ({_size(need)} of disk, reused later)",
          file=sys.stderr)

    def copy(handle):
        with zf.open(info) as member, tqdm(total=need, unit="B", unit_scale=True,
                                           desc=f"unpacking {Path(path).name}",
                                           file=sys.stderr) as bar:
            while piece := member.read(_STREAM_PIECE):  # the CRC is checked at the end
                handle.write(piece)
                bar.update(len(piece))

    try:
        atomic_write(cache, copy)
    except OSError as err:
        raise UserError(f"could not write the unpacked copy {cache} ({err}); free some space "
                        f"or set data.cache_dir to a writable disk with {_size(need)} "
                        f"free") from None
    return cache


def _size(n_bytes):
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def _gather(source, offset, file_rows):
    """Rows `file_rows` (sorted) of the uint8 image array that starts at byte `offset`."""
    images = np.empty((len(file_rows), *IMAGE_SHAPE), np.uint8)
    with open(source, "rb") as f:
        for start in range(0, len(file_rows), _GATHER_ROWS):
            rows = file_rows[start:start + _GATHER_ROWS]
            first = int(rows[0])
            span = np.memmap(f, np.uint8, "r", offset=offset + first * ROW_BYTES,
                             shape=(int(rows[-1]) - first + 1, *IMAGE_SHAPE))
            images[start:start + len(rows)] = span[rows - first]
            del span  # unmap now: its resident pages count towards this process's RSS
    return images


# ---------------------------------------------------------------- writing the npz


def write_npz(path, images, compressed=True):
    """Write images in the real file's layout (a single member images.npy), atomically."""
    images = _check_images(images, "write_npz(images)")
    compression = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED

    def write(handle):
        with zipfile.ZipFile(handle, "w", compression) as zf:
            with zf.open("images.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, images, allow_pickle=False)

    atomic_write(Path(path).absolute(), write)


def write_sparse_npz(path, num_rows, rows, images):
    """Write a stored npz whose images member has `num_rows` rows but data only at `rows`.

    For the tests and the memory benchmark, which need a file of the real size (12.7 GB for
    the toy grid) without the disk: the rows in between are a hole in a sparse file, which the
    file system reads as zeros and stores in no blocks. The zip is complete and valid, CRC-32
    included. rows: sorted unique row numbers; images: (len(rows), 64, 64, 3) uint8.
    """
    rows = np.asarray(rows, np.int64)
    images = _check_images(images, "write_sparse_npz(images)")
    if len(rows) != len(images) or (len(rows) and (rows[0] < 0 or rows[-1] >= num_rows
                                                   or (np.diff(rows) <= 0).any())):
        raise UserError(f"write_sparse_npz(rows) must be {len(images)} sorted unique row "
                        f"numbers in [0, {num_rows}); pass one row number per image")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (num_rows, *IMAGE_SHAPE)})
    header = header.getvalue()
    size = len(header) + num_rows * ROW_BYTES
    crc = _sparse_crc(header, num_rows, rows, images)
    name = b"images.npy"
    zip64 = struct.pack("<HHQQ", 0x0001, 16, size, size)  # sizes too big for the 32-bit fields

    def write(f):
        f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc,
                            0xFFFFFFFF, 0xFFFFFFFF, len(name), len(zip64)) + name + zip64)
        data = f.tell() + len(header)
        f.write(header)
        for row, image in zip(rows, images):
            f.seek(data + int(row) * ROW_BYTES)
            f.write(image.tobytes())
        f.seek(data + num_rows * ROW_BYTES)
        central = f.tell()
        f.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc,
                            0xFFFFFFFF, 0xFFFFFFFF, len(name), len(zip64), 0, 0, 0, 0, 0)
                + name + zip64)
        end64 = f.tell()
        f.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 1, 1,
                            end64 - central, central))
        f.write(struct.pack("<IIQI", 0x07064B50, 0, end64, 1))
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, end64 - central,
                            0xFFFFFFFF, 0))

    atomic_write(Path(path).absolute(), write)


def _sparse_crc(header, num_rows, rows, images):
    """CRC-32 of the member's bytes: the header, then zeros except at `rows`."""
    zeros = memoryview(bytes(_STREAM_PIECE))

    def skip(crc, n_bytes):
        while n_bytes:
            step = min(n_bytes, len(zeros))
            crc = zlib.crc32(zeros[:step], crc)
            n_bytes -= step
        return crc

    crc, done = zlib.crc32(header), 0
    for row, image in zip(rows, images):
        crc = zlib.crc32(image.tobytes(), skip(crc, (int(row) - done) * ROW_BYTES))
        done = int(row) + 1
    return skip(crc, (num_rows - done) * ROW_BYTES)


def _check_images(images, what):
    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise UserError(f"{what} must be uint8 of shape (N, 64, 64, 3), got {images.dtype} "
                        f"{images.shape}; pass RGB images as render() returns them")
    return images


# ---------------------------------------------------------------- entry point


def load_images(path, flat_indices, cache_dir, variant):
    """Images and classes for `flat_indices` (sorted): from the real file at `path`, or, when
    `path` is empty, from the procedural stand-in (toy only) cached in `cache_dir`."""
    if path:
        return read_rows(path, flat_indices, variant, cache_dir=cache_dir)
    if _check_variant(variant) != "toy":
        raise UserError(f"variant '{variant}' has no procedural stand-in; download "
                        f"{VARIANTS[variant][0]} from {SOURCE} and set data.path to it, or set "
                        f"data.variant='toy'")
    wanted = np.unique(_check_flat(flat_indices, variant))
    digest = hashlib.sha256(RENDER_VERSION.encode() + wanted.astype("<i8").tobytes())
    cache = Path(cache_dir) / f"mpi3d_toy_procedural_v1_{digest.hexdigest()[:12]}.npz"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        classes = classes_from_flat(wanted, variant)
        images = render_rows(render, classes, IMAGE_SHAPE, _RENDER_CHUNK,
                             "rendering the MPI3D toy stand-in")
        write_npz(cache, images, compressed=False)
    return _read_rows(cache, flat_indices, variant, wanted, None,
                      f"delete {cache} and rerun to render it again")


# ---------------------------------------------------------------- argument checks


def _check_flat(flat_indices, variant):
    total = num_images(variant)
    flat = np.asarray(flat_indices)
    if flat.size == 0:
        return np.zeros(0, np.int64)
    if flat.ndim != 1 or flat.dtype.kind not in "iu":
        raise UserError(f"flat indices must be a 1-D integer array, got {flat.dtype} of shape "
                        f"{flat.shape}; pass classes @ factor_bases({variant!r})")
    if flat.min() < 0 or flat.max() >= total:
        raise UserError(f"flat indices of variant {variant!r} must lie in [0, {total}), got "
                        f"{flat.min()}..{flat.max()}; compute them as classes @ "
                        f"factor_bases({variant!r})")
    return flat.astype(np.int64)


def _check_held_rows(rows, variant):
    """None, or the flat indices a small file's rows hold: 1-D, strictly increasing."""
    if rows is None:
        return None
    held = _check_flat(rows, variant)
    if (np.diff(held) <= 0).any():
        raise UserError("read_rows(rows=) must list the flat index of each file row, strictly "
                        "increasing, as the file was written; pass np.unique(indices)")
    return held


def _check_classes(classes, what, variant):
    sizes = factor_sizes(variant)
    if classes.ndim != 2 or classes.shape[1] != len(sizes) or classes.dtype.kind not in "iu":
        raise UserError(f"{what} must be an (N, 7) integer array, got {classes.dtype} of shape "
                        f"{classes.shape}; pass one row of factor indices per image")
    bad = np.flatnonzero(((classes < 0) | (classes >= np.array(sizes))).any(axis=1))
    if len(bad):
        raise UserError(f"{what} row {bad[0]} = {classes[bad[0]].tolist()} is outside the "
                        f"{variant} factor sizes {list(sizes)}; use indices 0..size-1 per factor")
    return classes.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# The training view: the chosen subset on the training device, split, labelled, with entities.

PIXEL_SCALE = 1 / 255


def entity_space(cfg: dict) -> EntitySpace:
    return EntitySpace(FACTOR_NAMES, factor_sizes(cfg["data"]["variant"]),
                       cfg["entities"]["bins"], cfg["entities"]["relations"])


def load_data(cfg: dict, device, repo_root: Path) -> datalib.Data:
    """Read (or generate) the subset, split it, pick the labelled budget, move it to device."""
    space, variant = entity_space(cfg), cfg["data"]["variant"]
    path, cache_dir = datalib.resolve_paths(cfg, repo_root)
    flat = datalib.subset_flat_indices(space, cfg["data"]["nuisances"], factor_bases(variant))
    images, classes = load_images(path, flat, cache_dir, variant)
    return datalib.to_device(images, classes, space, cfg, device, PIXEL_SCALE)


def augment(x, cfg: dict):
    """On-the-fly input corruption (the target stays clean): salt-and-pepper noise and a
    blanked square; x (B, 3, 64, 64) in [0, 1]."""
    opts = cfg["data"]
    x = salt_and_pepper(x, opts["noise_prob"], opts["noise_rate"])
    return mask_square(x, opts["mask_prob"], opts["mask_size"])

"""Shapes3D data: the factor grid, a reader for the real 3dshapes.h5, and a procedural stand-in.

The real file (FILE_NAME, github.com/google-deepmind/3d-shapes) holds all 480,000
combinations of the six factors: `images` (480000, 64, 64, 3) uint8 and `labels`
(480000, 6) float64, the labels being factor values (not indices) and row i the combination
whose flat index is i (orientation fastest). The images are 5.9 GB, so `read_rows` reads only
the rows asked for. With no file, `load_images` renders the requested rows, caches them in the
real layout and reads them back through `read_rows`, so the stand-in and the real file share
one code path.
"""

import functools
import hashlib
import os
from pathlib import Path

import h5py
import numpy as np

from common import data as datalib
from common.augment import mask_square, salt_and_pepper
from common.checkpoint import atomic_write
from common.entities import EntitySpace
from common.errors import UserError
from common.render import render_rows

FILE_NAME = "3dshapes.h5"
FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
FACTOR_BASES = (48000, 4800, 480, 60, 15, 1)  # flat index = classes @ bases (orientation fastest)
NUM_IMAGES = 480000
IMAGE_SHAPE = (64, 64, 3)
SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")

_SIZES = np.array(FACTOR_SIZES, np.int64)
_BASES = np.array(FACTOR_BASES, np.int64)
_REAL_FIX = (f"re-download {FILE_NAME} from storage.googleapis.com/3d-shapes/3dshapes.h5, "
             "or set data.path='' to use the procedural stand-in")

# Reads take runs of wanted rows, bridging gaps of up to _READ_GAP unwanted rows (cheaper to
# copy than a separate h5py call), at most _READ_CHUNK rows (48 MB of images) at a time.
_READ_CHUNK = 4096
_READ_GAP = 8
# HDF5 decompresses whole chunks; a chunk cache this big lets neighbouring rows share one.
_CHUNK_CACHE_BYTES = 32 << 20
_WRITE_CHUNK_ROWS = 64  # rows per HDF5 chunk in the files we write (768 KB of images)
_RENDER_CHUNK = 256


def factor_values():
    """The published value grid of each factor (float64), in FACTOR_NAMES order."""
    hues = np.linspace(0.0, 0.9, 10)
    return [hues, hues.copy(), hues.copy(), np.linspace(0.75, 1.25, 8),
            np.array([0.0, 1.0, 2.0, 3.0]), np.linspace(-30.0, 30.0, 15)]


def classes_from_flat(flat_indices):
    """(N,) flat indices -> (N, 6) int64 factor indices; inverse of classes @ FACTOR_BASES."""
    flat = _check_flat(flat_indices)
    return (flat[:, None] // _BASES) % _SIZES


# ---------------------------------------------------------------- procedural stand-in
#
# A small ray tracer, in world units: the floor is the plane y = 0, the wall the plane
# z = WALL_Z behind the object, and the object stands on the floor centred on the vertical
# axis x = z = 0. The camera circles that axis: orientation is its azimuth in degrees, so the
# floor/wall edge tilts one way or the other and the light, fixed in the world, moves across
# the object. Colours only tint what the geometry gives, so each pixel is a fixed mix of the
# floor, wall and object colours (coverage times shading, `_layers`), worked out once per
# (scale, shape, orientation) and reused for all 1,000 hue combinations.

RENDER_VERSION = "procedural-v1"
WALL_Z = 4.0
CAMERA_DISTANCE = 10.0  # from the camera to the point it looks at
CAMERA_ELEVATION = np.radians(20.0)
LOOK_AT_Y = 0.9
FOCAL_PX = 104.0  # 34 degrees field of view: about 10 px per world unit at the object
LIGHT = np.array([-0.45, 0.8, -0.4]) / np.linalg.norm([-0.45, 0.8, -0.4])  # towards the light
AMBIENT = 0.3
_SS = 3  # rays per pixel side: 3 x 3 rays smooth the edges
_EPS = 1e-4

# Object sizes in world units per unit of scale. At scale 1 the cube is 1.6 wide and tall,
# the cylinder 1.7 wide and tall, the sphere 1.9 across, the capsule 1.2 wide and 2.3 tall:
# from about 15 px (scale 0.75) to 30 px (scale 1.25) on screen.
CUBE_HALF = 0.8
CYLINDER_RADIUS, CYLINDER_HEIGHT = 0.85, 1.7
SPHERE_RADIUS = 0.95
CAPSULE_RADIUS, CAPSULE_HEIGHT = 0.6, 2.3


def render(classes):
    """(N, 6) int factor indices -> (N, 64, 64, 3) uint8 procedural Shapes3D images."""
    classes = _check_classes(np.asarray(classes), "render(classes)")
    images = np.empty((len(classes), *IMAGE_SHAPE), np.uint8)
    hue_rgb = _hue_rgb(factor_values()[0]).astype(np.float32)  # (10, 3)
    for start in range(0, len(classes), _RENDER_CHUNK):
        chunk = classes[start:start + _RENDER_CHUNK]
        layers = np.stack([_layers(*key) for key in chunk[:, 3:].tolist()])  # (n, 64, 64, 3)
        colours = hue_rgb[chunk[:, :3]]  # (n, 3 surfaces, 3 channels)
        pixels = layers.reshape(len(chunk), -1, 3) @ colours  # (n, 4096, 3)
        np.clip(pixels, 0.0, 1.0, out=pixels)
        pixels *= 255.0
        images[start:start + len(chunk)] = np.rint(pixels, out=pixels).reshape(-1, *IMAGE_SHAPE)
    return images


def _hue_rgb(hue):
    """HSV hues at full saturation and value -> (..., 3) RGB in [0, 1]."""
    h = 6.0 * np.asarray(hue, np.float64)
    rgb = np.stack([np.abs(h - 3.0) - 1.0, 2.0 - np.abs(h - 2.0), 2.0 - np.abs(h - 4.0)], axis=-1)
    return np.clip(rgb, 0.0, 1.0)


@functools.lru_cache(maxsize=None)
def _layers(scale, shape, orientation):
    """Class indices -> (64, 64, 3) float32 weights of the floor, wall and object colours in
    each pixel: the share of the pixel's rays that hit the surface times its shading. A weight
    is 0 exactly where the surface is not seen (shading is never below AMBIENT)."""
    size = factor_values()[3][scale]
    origin, rays = _camera_rays(np.radians(factor_values()[5][orientation]))
    origins = np.broadcast_to(origin, rays.shape)
    t_object, normal = _intersect(shape, size, origins, rays)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(rays[:, 1] < 0, -origin[1] / rays[:, 1], np.inf)
        t_wall = np.where(rays[:, 2] > 0, (WALL_Z - origin[2]) / rays[:, 2], np.inf)
    surface = np.argmin(np.stack([t_floor, t_wall, t_object]), axis=0)  # 0 floor 1 wall 2 object
    normal[surface == 0] = (0.0, 1.0, 0.0)
    normal[surface == 1] = (0.0, 0.0, -1.0)
    t = np.choose(surface, [t_floor, t_wall, t_object])
    light = np.maximum(normal @ LIGHT, 0.0)
    # Floor and wall points facing the light are in the object's shadow when a ray towards
    # the light hits it; the object shades itself through light alone.
    behind = np.flatnonzero((surface < 2) & (light > 0))
    points = origin + t[behind, None] * rays[behind] + _EPS * normal[behind]
    blocked, _ = _intersect(shape, size, points, np.broadcast_to(LIGHT, points.shape))
    light[behind[np.isfinite(blocked)]] = 0.0
    shade = AMBIENT + (1.0 - AMBIENT) * light
    weights = np.zeros((len(rays), 3))
    weights[np.arange(len(rays)), surface] = shade
    weights = weights.reshape(64, _SS, 64, _SS, 3).mean(axis=(1, 3)).astype(np.float32)
    weights.flags.writeable = False  # shared by every later call
    return weights


def _camera_rays(azimuth):
    """Camera position (3,) and unit ray directions (64 * 64 * _SS**2, 3), row-major over the
    supersampled image (rows downwards)."""
    ground = CAMERA_DISTANCE * np.cos(CAMERA_ELEVATION)
    target = np.array([0.0, LOOK_AT_Y, 0.0])
    origin = target + np.array([-ground * np.sin(azimuth),
                                CAMERA_DISTANCE * np.sin(CAMERA_ELEVATION),
                                -ground * np.cos(azimuth)])
    forward = (target - origin) / CAMERA_DISTANCE
    right = np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    offsets = (np.arange(64 * _SS) + 0.5) / _SS - 32.0  # sub-ray positions in pixels
    across = offsets[None, :, None] / FOCAL_PX
    down = offsets[:, None, None] / FOCAL_PX
    rays = (forward + across * right - down * up).reshape(-1, 3)
    return origin, rays / np.linalg.norm(rays, axis=1, keepdims=True)


def _intersect(shape, size, origins, rays):
    """Nearest hit of each ray (origins, unit directions: (M, 3)) on the object at `size`
    (a scale value): distances (M,), inf for a miss, and unit normals (M, 3)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _SHAPES[shape](origins, rays, size)


def _box(o, d, size):
    half = CUBE_HALF * size
    lo = np.array([-half, 0.0, -half])
    hi = np.array([half, 2.0 * half, half])
    t1, t2 = (lo - o) / d, (hi - o) / d  # per-axis slab crossings; inf where d is 0 on an axis
    near = np.minimum(t1, t2)
    axis = np.argmax(near, axis=1)
    t_in = near[np.arange(len(o)), axis]
    t_out = np.maximum(t1, t2).min(axis=1)
    t = np.where((t_in <= t_out) & (t_in > _EPS), t_in, np.inf)
    normal = np.zeros(o.shape)
    normal[np.arange(len(o)), axis] = -np.sign(d[np.arange(len(o)), axis])
    return t, normal


def _ball(o, d, centre, radius):
    oc = o - centre
    b = np.einsum("ij,ij->i", oc, d)
    disc = b * b - (np.einsum("ij,ij->i", oc, oc) - radius * radius)
    t = -b - np.sqrt(disc)  # nan where the ray misses
    t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
    return t, (o + np.where(np.isfinite(t), t, 0.0)[:, None] * d - centre) / radius


def _tube(o, d, radius, y_lo, y_hi):
    """The side of the vertical cylinder of `radius` about the y axis between y_lo and y_hi."""
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2]
    c = o[:, 0] ** 2 + o[:, 2] ** 2 - radius * radius
    disc = b * b - a * c
    t = (-b - np.sqrt(disc)) / a
    y = o[:, 1] + t * d[:, 1]
    t = np.where((disc >= 0) & (t > _EPS) & (y >= y_lo) & (y <= y_hi), t, np.inf)
    hit = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    return t, np.stack([hit[:, 0], np.zeros(len(o)), hit[:, 2]], axis=1) / radius


def _nearest(*hits):
    t = np.stack([h[0] for h in hits])
    which = np.argmin(t, axis=0)
    normals = np.stack([h[1] for h in hits])
    return t[which, np.arange(t.shape[1])], normals[which, np.arange(t.shape[1])]


def _cylinder(o, d, size):
    radius, height = CYLINDER_RADIUS * size, CYLINDER_HEIGHT * size
    t_cap = (height - o[:, 1]) / d[:, 1]
    hit = o + np.where(np.isfinite(t_cap), t_cap, 0.0)[:, None] * d
    on_cap = (t_cap > _EPS) & (hit[:, 0] ** 2 + hit[:, 2] ** 2 <= radius * radius)
    cap = np.where(on_cap, t_cap, np.inf), np.broadcast_to([0.0, 1.0, 0.0], o.shape)
    return _nearest(_tube(o, d, radius, 0.0, height), cap)


def _sphere(o, d, size):
    radius = SPHERE_RADIUS * size
    return _ball(o, d, np.array([0.0, radius, 0.0]), radius)


def _capsule(o, d, size):
    radius, height = CAPSULE_RADIUS * size, CAPSULE_HEIGHT * size
    bottom, top = radius, height - radius  # centres of the two end balls
    return _nearest(_tube(o, d, radius, bottom, top),
                    _ball(o, d, np.array([0.0, bottom, 0.0]), radius),
                    _ball(o, d, np.array([0.0, top, 0.0]), radius))


_SHAPES = (_box, _cylinder, _sphere, _capsule)  # shape factor order


# ---------------------------------------------------------------- reading the h5


class _BadFile(Exception):
    """A problem with the file; read_rows adds the path and the fix."""


def read_rows(path, flat_indices):
    """Rows of a Shapes3D h5 whose flat index is in `flat_indices`, sorted by flat index.

    Returns (images (n, 64, 64, 3) uint8, classes (n, 6) int64). A file of all 480,000 rows
    (the real one) is read by index arithmetic, row = flat index, and the labels of the rows
    read must agree. A smaller file (written by write_h5: the stand-in cache, tests) is
    searched through its labels. Only runs of wanted rows are read (bridging gaps of up to
    _READ_GAP rows), never the whole array.
    """
    return _read_rows(path, flat_indices, _REAL_FIX)


def _read_rows(path, flat_indices, fix):
    wanted = np.unique(_check_flat(flat_indices))
    try:
        _check_path(path)
        with h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES) as f:
            images, labels = _datasets(f)
            if len(images) == NUM_IMAGES:
                file_rows = wanted
                _check_layout(_gather(labels, file_rows), wanted)
            else:
                file_rows = _rows_by_labels(labels[:], wanted)
            out = _gather(images, file_rows)
    except _BadFile as err:
        raise UserError(f"Shapes3D file {path}: {err}; {fix}") from None
    except (OSError, RuntimeError) as err:
        module = "" if type(err).__module__ == "builtins" else type(err).__module__ + "."
        raise UserError(f"Shapes3D file {path} is corrupt or unreadable ({module}"
                        f"{type(err).__name__}: {' '.join(str(err).split())}); {fix}") from None
    return out, classes_from_flat(wanted)


def _check_path(path):
    if not os.path.exists(path):
        raise _BadFile("does not exist")
    if not os.path.isfile(path):
        raise _BadFile("is not a file")
    if os.path.getsize(path) == 0:
        raise _BadFile("is empty (0 bytes)")
    if not h5py.is_hdf5(path):
        raise _BadFile("is not an HDF5 file (no HDF5 signature)")


def _datasets(f):
    """The `images` and `labels` datasets, checked for dtype, shape and matching rows."""
    missing = [key for key in ("images", "labels") if key not in f]
    if missing:
        raise _BadFile(f"missing key(s) {', '.join(missing)}; found {sorted(f.keys())}")
    found = []
    for key, dtype, row_shape in (("images", np.uint8, IMAGE_SHAPE), ("labels", np.float64, (6,))):
        data = f[key]
        if not isinstance(data, h5py.Dataset):
            raise _BadFile(f"{key} is a {type(data).__name__}, expected a dataset")
        if data.dtype != dtype:
            raise _BadFile(f"{key} has dtype {data.dtype}, expected {np.dtype(dtype)}")
        if data.ndim != 1 + len(row_shape) or data.shape[1:] != row_shape:
            raise _BadFile(f"{key} has shape {data.shape}, expected "
                           f"(N, {', '.join(map(str, row_shape))})")
        found.append(data)
    images, labels = found
    if len(images) != len(labels):
        raise _BadFile(f"row counts differ: images {len(images)}, labels {len(labels)}")
    if len(images) > NUM_IMAGES:
        raise _BadFile(f"has {len(images)} rows, expected {NUM_IMAGES} (one per factor "
                       "combination)")
    return images, labels


def _classes_from_labels(labels, rows):
    """(n, 6) label values -> (n, 6) class indices; refuses values off the published grid.
    `rows` are the file rows of the labels, for the message."""
    classes = np.empty(labels.shape, np.int64)
    for i, grid in enumerate(factor_values()):
        column = labels[:, i]
        nearest = np.searchsorted((grid[1:] + grid[:-1]) / 2, column)
        classes[:, i] = nearest
        off = ~(np.abs(column - grid[nearest]) <= 0.01 * (grid[1] - grid[0]))  # nan is off too
        if off.any():
            bad = np.flatnonzero(off)[0]
            raise _BadFile(f"labels column {i} ({FACTOR_NAMES[i]}) holds {float(column[bad])} at "
                           f"row {rows[bad]}, which is not on the published grid "
                           f"{np.round(grid, 4).tolist()} ({off.sum()} such row(s)); the labels "
                           f"must be factor values, not indices, in the order "
                           f"{', '.join(FACTOR_NAMES)}")
    return classes


def _check_layout(labels, wanted):
    """In a full-size file row i must hold flat index i; check the rows read."""
    flat = _classes_from_labels(labels, wanted) @ _BASES
    wrong = np.flatnonzero(flat != wanted)
    if len(wrong):
        row = wanted[wrong[0]]
        held = dict(zip(FACTOR_NAMES, np.round(labels[wrong[0]], 4).tolist()))
        expected = dict(zip(FACTOR_NAMES, np.round(_values(classes_from_flat([row]))[0], 4)
                            .tolist()))
        raise _BadFile(f"labels do not follow the published layout (row = factor indices @ "
                       f"{FACTOR_BASES}, orientation fastest): {len(wrong)} of the {len(wanted)} "
                       f"rows read disagree, e.g. row {row} holds {held}, expected {expected}")


def _rows_by_labels(labels, wanted):
    """File row of each wanted flat index, found through the labels; says which are absent."""
    file_flat = _classes_from_labels(labels, np.arange(len(labels))) @ _BASES
    order = np.argsort(file_flat, kind="stable")
    sorted_flat = file_flat[order]
    pos = np.minimum(np.searchsorted(sorted_flat, wanted), max(len(order) - 1, 0))
    found = (sorted_flat[pos] == wanted) if len(order) else np.zeros(len(wanted), bool)
    if not found.all():
        absent = wanted[~found]
        first = dict(zip(FACTOR_NAMES, classes_from_flat(absent[:1])[0].tolist()))
        raise _BadFile(f"{len(absent)} of the {len(wanted)} requested images are not in the "
                       f"file (it holds {len(labels)} of the {NUM_IMAGES} rows), e.g. flat index "
                       f"{absent[0]} {first}")
    return order[pos]


def _gather(data, rows):
    """data[rows] for unique `rows`, read in file order as runs of nearby rows (_READ_GAP)."""
    out = np.empty((len(rows), *data.shape[1:]), data.dtype)
    order = np.argsort(rows, kind="stable")
    in_order = bool((order == np.arange(len(rows))).all())
    rows = rows[order]
    buffer = None
    i = 0
    while i < len(rows):
        j = i + 1
        while (j < len(rows) and rows[j] - rows[j - 1] <= _READ_GAP
               and rows[j] - rows[i] < _READ_CHUNK):
            j += 1
        first, stop = int(rows[i]), int(rows[j - 1]) + 1
        if in_order and stop - first == j - i:  # a run of wanted rows: read straight into out
            data.read_direct(out, np.s_[first:stop], np.s_[i:j])
        else:
            if buffer is None:
                buffer = np.empty((min(_READ_CHUNK, len(data)), *data.shape[1:]), data.dtype)
            data.read_direct(buffer, np.s_[first:stop], np.s_[:stop - first])
            out[order[i:j]] = buffer[rows[i:j] - first]
        i = j
    return out


# ---------------------------------------------------------------- writing the h5


def write_h5(path, images, classes):
    """Write images and their labels (factor values) in the real file's layout, atomically:
    `images` (n, 64, 64, 3) uint8 and `labels` (n, 6) float64, gzip-compressed in chunks of
    rows. Rows stay in the order given."""
    classes = _check_classes(np.asarray(classes), "write_h5(classes)")
    images = _check_images(images, len(classes), "write_h5(images)")

    def write(f):
        f.create_dataset("images", data=images, chunks=_chunks(len(images)), compression="gzip")
        f.create_dataset("labels", data=_values(classes), compression="gzip")

    _write_atomic(path, write)


def write_sparse_h5(path, flat_indices, images):
    """Write a full-size file in the real layout, all 480,000 labels, with images only at
    `flat_indices` (sorted unique). For tests and the memory benchmark: the other rows' chunks
    are never written, so they take no disk space and read back as zeros without disk IO."""
    flat = _check_flat(flat_indices)
    if (np.diff(flat) <= 0).any():
        raise UserError("write_sparse_h5(flat_indices) must be sorted and unique; pass "
                        "np.unique(indices)")
    images = _check_images(images, len(flat), "write_sparse_h5(images)")

    def write(f):
        every = classes_from_flat(np.arange(NUM_IMAGES))
        f.create_dataset("labels", data=_values(every), compression="gzip")
        data = f.create_dataset("images", (NUM_IMAGES, *IMAGE_SHAPE), np.uint8,
                                chunks=_chunks(NUM_IMAGES), compression="gzip")
        for start in range(0, len(flat), _READ_CHUNK):
            rows = flat[start:start + _READ_CHUNK]
            data[rows] = images[start:start + _READ_CHUNK]

    _write_atomic(path, write)


def _chunks(n_rows):
    return (max(1, min(n_rows, _WRITE_CHUNK_ROWS)), *IMAGE_SHAPE)


def _write_atomic(path, write):
    """Run write(h5py.File) into a temporary file that replaces `path` once complete."""
    def to_handle(handle):
        # atomic_write's handle is write-only and HDF5 reads back what it wrote, so reopen
        # the same descriptor read-write (no second file, no second close).
        with open(handle.fileno(), "r+b", closefd=False) as raw, h5py.File(raw, "w") as f:
            write(f)

    atomic_write(Path(path).absolute(), to_handle)


def _values(classes):
    """(n, 6) class indices -> (n, 6) float64 factor values, as the real labels hold them."""
    return np.stack([grid[classes[:, i]] for i, grid in enumerate(factor_values())], axis=1)


# ---------------------------------------------------------------- entry point


def load_images(path, flat_indices, cache_dir):
    """Images and classes for `flat_indices` (sorted): from the real file at `path`, or, when
    `path` is empty, from the procedural stand-in cached in `cache_dir`."""
    if path:
        return read_rows(path, flat_indices)
    wanted = np.unique(_check_flat(flat_indices))
    digest = hashlib.sha256(RENDER_VERSION.encode() + wanted.astype("<i8").tobytes())
    cache = Path(cache_dir) / f"shapes3d_procedural_v1_{digest.hexdigest()[:12]}.h5"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        classes = classes_from_flat(wanted)
        images = render_rows(render, classes, IMAGE_SHAPE, _RENDER_CHUNK,
                             "rendering the Shapes3D stand-in")
        write_h5(cache, images, classes)
    return _read_rows(cache, flat_indices, f"delete {cache} and rerun to render it again")


# ---------------------------------------------------------------- argument checks


def _check_flat(flat_indices):
    flat = np.asarray(flat_indices)
    if flat.size == 0:
        return np.zeros(0, np.int64)
    if flat.ndim != 1 or flat.dtype.kind not in "iu":
        raise UserError(f"flat indices must be a 1-D integer array, got {flat.dtype} of shape "
                        f"{flat.shape}; pass classes @ FACTOR_BASES")
    if flat.min() < 0 or flat.max() >= NUM_IMAGES:
        raise UserError(f"flat indices must lie in [0, {NUM_IMAGES}), got {flat.min()}.."
                        f"{flat.max()}; compute them as classes @ FACTOR_BASES")
    return flat.astype(np.int64)


def _check_classes(classes, what):
    if classes.ndim != 2 or classes.shape[1] != 6 or classes.dtype.kind not in "iu":
        raise UserError(f"{what} must be an (N, 6) integer array, got {classes.dtype} of shape "
                        f"{classes.shape}; pass one row of factor indices per image")
    bad = np.flatnonzero(((classes < 0) | (classes >= _SIZES)).any(axis=1))
    if len(bad):
        raise UserError(f"{what} row {bad[0]} = {classes[bad[0]].tolist()} is outside "
                        f"FACTOR_SIZES {FACTOR_SIZES}; use indices 0..size-1 per factor")
    return classes.astype(np.int64)


def _check_images(images, n_rows, what):
    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8 or images.shape != (n_rows, *IMAGE_SHAPE):
        raise UserError(f"{what} must be uint8 of shape ({n_rows}, 64, 64, 3), got "
                        f"{images.dtype} {images.shape}; pass one RGB image per row")
    return images


# ---------------------------------------------------------------------------------------------
# The training view: the chosen subset on the training device, split, labelled, with entities.

PIXEL_SCALE = 1 / 255


def entity_space(cfg: dict) -> EntitySpace:
    return EntitySpace(FACTOR_NAMES, FACTOR_SIZES, cfg["entities"]["bins"],
                       cfg["entities"]["relations"])


def load_data(cfg: dict, device, repo_root: Path) -> datalib.Data:
    """Read (or generate) the subset, split it, pick the labelled budget, move it to device."""
    space = entity_space(cfg)
    path, cache_dir = datalib.resolve_paths(cfg, repo_root)
    flat = datalib.subset_flat_indices(space, cfg["data"]["nuisances"], FACTOR_BASES)
    images, classes = load_images(path, flat, cache_dir)
    return datalib.to_device(images, classes, space, cfg, device, PIXEL_SCALE)


def augment(x, cfg: dict):
    """On-the-fly input corruption (the target stays clean): salt-and-pepper noise and a
    blanked square; x (B, 3, 64, 64) in [0, 1]."""
    opts = cfg["data"]
    x = salt_and_pepper(x, opts["noise_prob"], opts["noise_rate"])
    return mask_square(x, opts["mask_prob"], opts["mask_size"])

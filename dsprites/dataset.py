"""dSprites data: the factor grid, a streaming reader for the real npz, and a procedural stand-in.

The real file (FILE_NAME, github.com/google-deepmind/dsprites-dataset) holds all 737,280
combinations of the six factors. `read_rows` streams it and keeps only the requested rows.
With no file, `load_images` renders the requested rows, caches them in the real layout and
reads them back through `read_rows`, so the stand-in and the real file share one code path.
"""

import hashlib
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import atomic_write
from common import data as datalib
from common.augment import mask_square
from common.entities import EntitySpace
from common.errors import UserError

FILE_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
FACTOR_BASES = (737280, 245760, 40960, 1024, 32, 1)  # flat index = classes @ bases (posY fastest)
IMAGE_SHAPE = (64, 64)
NUM_IMAGES = 737280

_SIZES = np.array(FACTOR_SIZES, np.int64)
_BASES = np.array(FACTOR_BASES, np.int64)
_REAL_FIX = (f"re-download {FILE_NAME} from github.com/google-deepmind/dsprites-dataset, "
             "or set data.path='' to use the procedural stand-in")

# Rows per streamed chunk of `imgs` (16 MB): big enough for fast inflate, small next to 1 GB.
_READ_CHUNK = 4096
_READ_PIECE = 1 << 20
_RENDER_CHUNK = 1024

# Procedural sprites are drawn in "units": every shape fits in the disc of radius 1 unit about
# its centre, so no rotation can push it further out; one unit is UNIT_PX * scale pixels.
RENDER_VERSION = "procedural-v1"
UNIT_PX = 13.0
# Centres stay 2 px inside the largest disc's reach, so nothing is ever clipped and the
# border rows and columns stay empty at every scale, rotation and position.
CENTRE_MIN = UNIT_PX + 2.0
CENTRE_MAX = IMAGE_SHAPE[0] - CENTRE_MIN


def factor_values():
    """The published value grid of each factor (float64), in FACTOR_NAMES order."""
    return [
        np.array([1.0]),
        np.array([1.0, 2.0, 3.0]),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2 * np.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    ]


def classes_from_flat(flat_indices):
    """(N,) flat indices -> (N, 6) int64 factor indices; inverse of classes @ FACTOR_BASES."""
    flat = _check_flat(flat_indices)
    return (flat[:, None] // _BASES) % _SIZES


# ---------------------------------------------------------------- procedural stand-in


def _square(u, v):
    # half-side 1/sqrt(2): the corners just touch the unit disc (18.4 px wide at scale 1)
    return np.maximum(np.abs(u), np.abs(v)) <= 0.7071


def _ellipse(u, v):
    # a 2:1 oval, 21 x 11 px at scale 1, long axis along u
    return (u / 0.82) ** 2 + (v / 0.41) ** 2 <= 1.0


def _heart(u, v):
    # The classic implicit heart (x^2 + y^2 - 1)^3 <= x^2 y^3: lobes up, point down. Scaled to
    # 20 px wide at scale 1, shifted so its centroid sits on the sprite centre.
    x = u / 0.675
    y = v / 0.675 + 0.29
    t = x * x + y * y - 1.0
    return t * t * t <= x * x * y * y * y


_SHAPES = (_square, _ellipse, _heart)


def _draw(classes, margin=0):
    """(N, 6) classes -> (N, 64+2m, 64+2m) bool: the canvas plus `margin` px beyond each edge."""
    values = factor_values()
    span = CENTRE_MAX - CENTRE_MIN
    cx = (CENTRE_MIN + span * values[4][classes[:, 4]]).astype(np.float32)[:, None, None]
    cy = (CENTRE_MIN + span * values[5][classes[:, 5]]).astype(np.float32)[:, None, None]
    unit = (UNIT_PX * values[2][classes[:, 2]]).astype(np.float32)[:, None, None]
    # index 39 is 2*pi: fold it onto index 0 so both give bit-identical pictures
    angle = values[3][classes[:, 3] % (FACTOR_SIZES[3] - 1)]
    cos = np.cos(angle).astype(np.float32)[:, None, None]
    sin = np.sin(angle).astype(np.float32)[:, None, None]
    # pixel j covers [j, j+1) and is on when its centre j + 0.5 is inside the shape
    centres = np.arange(-margin, IMAGE_SHAPE[0] + margin, dtype=np.float32) + 0.5
    dx = (centres[None, None, :] - cx) / unit
    dy = (cy - centres[None, :, None]) / unit  # rows grow downwards, shape "up" is -row
    u = cos * dx + sin * dy  # rotate the pixel back into the shape's frame
    v = cos * dy - sin * dx
    masks = np.zeros(u.shape, bool)
    for shape, inside in enumerate(_SHAPES):
        rows = np.flatnonzero(classes[:, 1] == shape)
        if len(rows):
            masks[rows] = inside(u[rows], v[rows])
    return masks


def render(classes):
    """(N, 6) int factor indices -> (N, 64, 64) uint8 in {0, 1}: procedural dSprites images."""
    classes = _check_classes(np.asarray(classes), "render(classes)")
    imgs = np.empty((len(classes), *IMAGE_SHAPE), np.uint8)
    for start in range(0, len(classes), _RENDER_CHUNK):
        stop = start + _RENDER_CHUNK
        imgs[start:stop] = _draw(classes[start:stop])
    return imgs


# ---------------------------------------------------------------- reading the npz


class _BadFile(Exception):
    """A problem with the file; read_rows adds the path and the fix."""


def read_rows(path, flat_indices):
    """Rows of a dSprites npz whose flat index is in `flat_indices`, sorted by flat index.

    Returns (imgs (n, 64, 64) uint8, classes (n, 6) int64). Streams `imgs` in chunks, so the
    full 3 GB file is read in well under 1 GB of memory. Never unpickles anything.
    """
    return _read_rows(path, flat_indices, _REAL_FIX)


def _read_rows(path, flat_indices, fix):
    wanted = np.sort(_check_flat(flat_indices))
    try:
        _check_path(path)
        with _open_zip(path) as zf:
            return _select(zf, wanted)
    except _BadFile as err:
        raise UserError(f"dSprites file {path}: {err}; {fix}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
            RuntimeError) as err:
        module = "" if type(err).__module__ == "builtins" else type(err).__module__ + "."
        raise UserError(f"dSprites file {path} is corrupt or unreadable "
                        f"({module}{type(err).__name__}: {err}); {fix}") from None


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


def _select(zf, wanted):
    members = {name.removesuffix(".npy"): name for name in zf.namelist()}
    missing = [k for k in ("imgs", "latents_values", "latents_classes") if k not in members]
    if missing:
        raise _BadFile(f"missing key(s) {', '.join(missing)}; found {sorted(members)}")
    with zf.open(members["latents_values"]) as f:
        n_values = _read_header(f, "latents_values", np.float64, (6,))
    with zf.open(members["latents_classes"]) as f:
        n_rows = _read_header(f, "latents_classes", np.int64, (6,))
        classes = _read_classes(f, n_rows)
    with zf.open(members["imgs"]) as f:
        n_imgs = _read_header(f, "imgs", np.uint8, IMAGE_SHAPE)
        if not n_imgs == n_rows == n_values:
            raise _BadFile(f"row counts differ: imgs {n_imgs}, latents_classes {n_rows}, "
                           f"latents_values {n_values}")
        file_rows = _find_rows(classes @ _BASES, wanted)
        imgs = _stream_rows(f, file_rows)
    _check_pixels(imgs, wanted)
    return imgs, classes[file_rows]


def _read_header(f, key, dtype, row_shape):
    """Parse and check the .npy header of member `key`; return its row count."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, found = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, found = np.lib.format.read_array_header_2_0(f)
        else:
            raise _BadFile(f"{key} is .npy format version {version}; expected 1.0 or 2.0")
    except (ValueError, TypeError) as err:
        raise _BadFile(f"{key} has no valid .npy header ({err})") from None
    if found != np.dtype(dtype):
        raise _BadFile(f"{key} has dtype {found}, expected {np.dtype(dtype)}")
    if len(shape) != 1 + len(row_shape) or tuple(shape[1:]) != row_shape:
        raise _BadFile(f"{key} has shape {shape}, expected (N, {', '.join(map(str, row_shape))})")
    if fortran:
        raise _BadFile(f"{key} is stored in Fortran order; expected C order")
    return shape[0]


def _read_exact(f, n_bytes, key):
    """The next n_bytes of member `key` as uint8, read in pieces so that zipfile's own
    buffers (compressed input and decompressed output) stay around a megabyte."""
    out = np.empty(n_bytes, np.uint8)
    done = 0
    while done < n_bytes:
        piece = f.read(min(n_bytes - done, _READ_PIECE))
        if not piece:
            raise _BadFile(f"{key} is cut short: {n_bytes - done} bytes missing at its end")
        out[done:done + len(piece)] = np.frombuffer(piece, np.uint8)
        done += len(piece)
    return out


def _read_classes(f, n_rows):
    data = _read_exact(f, n_rows * 6 * 8, "latents_classes")
    classes = data.view(np.int64).reshape(n_rows, 6)
    bad = np.flatnonzero(((classes < 0) | (classes >= _SIZES)).any(axis=1))
    if len(bad):
        raise _BadFile(f"latents_classes has {len(bad)} row(s) outside FACTOR_SIZES "
                       f"{FACTOR_SIZES}, e.g. row {bad[0]} = {classes[bad[0]].tolist()}")
    return classes


def _find_rows(file_flat, wanted):
    """File row of each wanted flat index; says which are absent."""
    order = np.argsort(file_flat, kind="stable")
    sorted_flat = file_flat[order]
    pos = np.minimum(np.searchsorted(sorted_flat, wanted), len(order) - 1)
    found = (sorted_flat[pos] == wanted) if len(order) else np.zeros(len(wanted), bool)
    if not found.all():
        absent = wanted[~found]
        first = dict(zip(FACTOR_NAMES, classes_from_flat(absent[:1])[0].tolist()))
        raise _BadFile(f"{len(absent)} of the {len(wanted)} requested images are not in the "
                       f"file, e.g. flat index {absent[0]} {first}")
    return order[pos]


def _stream_rows(f, file_rows):
    """Read `imgs` rows in chunks, keeping only `file_rows` (in that order)."""
    row_bytes = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    imgs = np.empty((len(file_rows), *IMAGE_SHAPE), np.uint8)
    by_row = np.argsort(file_rows, kind="stable")
    sorted_rows = file_rows[by_row]
    # Rows past the last wanted one are never needed, so the stream stops there.
    end = sorted_rows[-1] + 1 if len(sorted_rows) else 0
    for start in range(0, end, _READ_CHUNK):
        stop = min(start + _READ_CHUNK, end)
        chunk = _read_exact(f, (stop - start) * row_bytes, "imgs")
        lo, hi = np.searchsorted(sorted_rows, [start, stop])
        imgs[by_row[lo:hi]] = chunk.reshape(-1, *IMAGE_SHAPE)[sorted_rows[lo:hi] - start]
    return imgs


def _check_pixels(imgs, wanted):
    bad = np.flatnonzero((imgs > 1).any(axis=(1, 2)))
    if len(bad):
        raise _BadFile(f"{len(bad)} requested image(s) have pixel values outside {{0, 1}}, "
                       f"e.g. flat index {wanted[bad[0]]} (max {imgs[bad[0]].max()})")


# ---------------------------------------------------------------- writing the npz


def write_npz(path, imgs, classes, compressed=True):
    """Write images and factor classes in the real file's layout, atomically."""
    imgs = np.ascontiguousarray(imgs)
    classes = _check_classes(np.asarray(classes), "write_npz(classes)")
    if imgs.dtype != np.uint8 or imgs.shape != (len(classes), *IMAGE_SHAPE):
        raise UserError(f"write_npz(imgs) must be uint8 of shape ({len(classes)}, 64, 64), got "
                        f"{imgs.dtype} {imgs.shape}; pass one 64x64 image per classes row")
    values = np.stack([grid[classes[:, i]] for i, grid in enumerate(factor_values())], axis=1)
    arrays = {"imgs": imgs, "latents_classes": classes, "latents_values": values}
    compression = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    atomic_write(Path(path).absolute(), lambda f: _write_zip(f, arrays, compression))


def _write_zip(f, arrays, compression):
    with zipfile.ZipFile(f, "w", compression) as zf:
        for key, array in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
        # Kept only so the layout matches the real file. Writing a pickle runs no code;
        # loading one would, which is why no reader here ever opens this member.
        with zf.open("metadata.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, _metadata(), allow_pickle=True)


def _metadata():
    """A 0-d object array holding a dict with the real file's metadata keys."""
    values = factor_values()
    return np.array({
        "title": "dSprites dataset (layout)",
        "description": "Written by dsprites/dataset.py write_npz in the layout of " + FILE_NAME,
        "version": 1,
        "latents_names": FACTOR_NAMES,
        "latents_sizes": np.array(FACTOR_SIZES),
        "latents_possible_values": dict(zip(FACTOR_NAMES, values)),
    }, dtype=object)


# ---------------------------------------------------------------- entry point


def load_images(path, flat_indices, cache_dir):
    """Images and classes for `flat_indices` (sorted): from the real file at `path`, or, when
    `path` is empty, from the procedural stand-in cached in `cache_dir`."""
    if path:
        return read_rows(path, flat_indices)
    wanted = np.unique(_check_flat(flat_indices))
    digest = hashlib.sha256(RENDER_VERSION.encode() + wanted.astype("<i8").tobytes())
    cache = os.path.join(cache_dir, f"dsprites_procedural_v1_{digest.hexdigest()[:12]}.npz")
    if not os.path.exists(cache):
        os.makedirs(cache_dir, exist_ok=True)
        classes = classes_from_flat(wanted)
        write_npz(cache, render(classes), classes)
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


# ---------------------------------------------------------------------------------------------
# The training view: the chosen subset on the training device, split, labelled, with entities.


PIXEL_SCALE = 1.0  # stored pixels are already 0 or 1


def entity_space(cfg: dict) -> EntitySpace:
    return EntitySpace(FACTOR_NAMES, FACTOR_SIZES, cfg["entities"]["bins"],
                       cfg["entities"]["relations"])


def subset_flat_indices(cfg: dict, space: EntitySpace) -> np.ndarray:
    """Flat indices of every image whose entity factors fall in a bin and nuisances are listed."""
    return datalib.subset_flat_indices(space, cfg["data"]["nuisances"], FACTOR_BASES)


def load_data(cfg: dict, device, repo_root: Path) -> datalib.Data:
    """Read (or generate) the subset, split it, pick the labelled budget, move it to device."""
    space = entity_space(cfg)
    path, cache_dir = datalib.resolve_paths(cfg, repo_root)
    imgs, classes = load_images(path, subset_flat_indices(cfg, space), cache_dir)
    return datalib.to_device(imgs[..., None], classes, space, cfg, device, PIXEL_SCALE)


def augment(x, cfg: dict):
    """On-the-fly input corruption: pixel flips and a blanked square, per image.

    x (B, 1, 64, 64) float in {0, 1}; the reconstruction target stays the clean image. Pixels
    are binary, so noise flips them (common.augment's salt-and-pepper is for colour images).
    """
    opts = cfg["data"]
    if opts["noise_prob"] > 0:
        noisy = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < opts["noise_prob"]
        flip = (torch.rand_like(x) < opts["noise_rate"]) & noisy
        x = torch.where(flip, 1 - x, x)
    return mask_square(x, opts["mask_prob"], opts["mask_size"])

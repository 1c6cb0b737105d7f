"""MPI3D data files: factor grids, procedural renderer, memory-mapping npz reader, caches."""
import itertools
import os
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest

from common.errors import UserError
from common.render import render_rows
from mpi3d import dataset as md

TOY = (6, 6, 2, 3, 3, 40, 40)


def _grid(*values):
    """All combinations of the given factor indices, as (N, 7) classes (last factor fastest)."""
    mesh = np.meshgrid(*values, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def _flat(classes, variant="toy"):
    return np.asarray(classes) @ np.array(md.factor_bases(variant))


def _pixel_masks(classes, margin=0):
    """Object masks at pixel resolution: a pixel counts when half its samples are inside."""
    _, mask = md._draw(np.asarray(classes), margin)
    side = 64 + 2 * margin
    return mask.reshape(len(mask), side, md._SS, side, md._SS).mean(axis=(2, 4)) >= 0.5


# ---------------------------------------------------------------- factor grids


def test_variant_sizes_bases_and_counts():
    assert md.FACTOR_NAMES == ("object_color", "object_shape", "object_size", "camera_height",
                               "background_color", "horizontal_axis", "vertical_axis")
    assert md.IMAGE_SHAPE == (64, 64, 3)
    assert sorted(md.VARIANTS) == ["complex", "real", "realistic", "toy"]
    for variant in ("toy", "realistic", "real"):
        assert md.VARIANTS[variant][0] == f"mpi3d_{variant}.npz"
        assert md.factor_sizes(variant) == TOY
        assert md.factor_bases(variant) == (172800, 28800, 14400, 4800, 1600, 40, 1)
        assert md.num_images(variant) == 1036800
    assert md.factor_sizes("complex") == (4, 4, 2, 3, 3, 40, 40)
    assert md.factor_bases("complex") == (115200, 28800, 14400, 4800, 1600, 40, 1)
    assert md.num_images("complex") == 460800


def test_unknown_variant_lists_the_valid_ones():
    for call in (lambda: md.factor_sizes("mpi3d"), lambda: md.classes_from_flat([0], "Toy"),
                 lambda: md.load_images("", [0], "/nonexistent", "simulated")):
        with pytest.raises(UserError) as err:
            call()
        message = str(err.value)
        assert "unknown MPI3D variant" in message and "data.variant" in message
        assert all(repr(v) in message for v in ("toy", "realistic", "real", "complex"))


@pytest.mark.parametrize("variant", ["toy", "complex"])
def test_classes_from_flat_round_trip_matches_numpy_unravel(variant):
    every = np.arange(md.num_images(variant))
    classes = md.classes_from_flat(every, variant)
    assert classes.dtype == np.int64 and classes.shape == (len(every), 7)
    expected = np.stack(np.unravel_index(every, md.factor_sizes(variant)), axis=1)
    np.testing.assert_array_equal(classes, expected)
    np.testing.assert_array_equal(_flat(classes, variant), every)


def test_classes_from_flat_known_rows():
    flat = np.array([0, 1, 40, 1600, 4800, 14400, 28800, 172800, 1036799])
    expected = [[0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1, 0],
                [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0],
                [0, 1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0], [5, 5, 1, 2, 2, 39, 39]]
    np.testing.assert_array_equal(md.classes_from_flat(flat, "toy"), expected)
    np.testing.assert_array_equal(md.classes_from_flat([460799], "complex"),
                                  [[3, 3, 1, 2, 2, 39, 39]])


def test_classes_from_flat_rejects_bad_indices():
    with pytest.raises(UserError, match=r"\[0, 1036800\), got 1036800\.\.1036800"):
        md.classes_from_flat([1036800], "toy")
    with pytest.raises(UserError, match=r"\[0, 460800\), got 0\.\.500000"):
        md.classes_from_flat([0, 500000], "complex")
    with pytest.raises(UserError, match="got -1"):
        md.classes_from_flat([-1, 3], "toy")
    with pytest.raises(UserError, match="1-D integer array, got float64"):
        md.classes_from_flat([0.5], "toy")
    with pytest.raises(UserError, match=r"shape \(2, 2\)"):
        md.classes_from_flat([[0, 1], [2, 3]], "toy")
    assert md.classes_from_flat([], "toy").shape == (0, 7)


# ---------------------------------------------------------------- renderer


def test_render_shape_dtype_and_determinism():
    classes = md.classes_from_flat(np.random.default_rng(0).choice(1036800, 200, replace=False),
                                   "toy")
    images = md.render(classes)
    assert images.shape == (200, 64, 64, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, md.render(classes))
    np.testing.assert_array_equal(images[17:18], md.render(classes[17:18]))  # chunk-independent
    # the background fills the top-left corner, which nothing reaches
    np.testing.assert_array_equal(images[:, 0, 0], md.BACKGROUNDS[classes[:, 4]])


def test_rendering_in_worker_processes_gives_the_same_images():
    classes = md.classes_from_flat(np.arange(0, 1036800, 16200), "toy")  # 64 rows
    serial = render_rows(md.render, classes, md.IMAGE_SHAPE, chunk=4, desc="", workers=1)
    parallel = render_rows(md.render, classes, md.IMAGE_SHAPE, chunk=4, desc="", workers=2)
    np.testing.assert_array_equal(serial, md.render(classes))
    np.testing.assert_array_equal(parallel, serial)
    assert len(np.unique(parallel.reshape(64, -1), axis=0)) > 32  # not one picture repeated


@pytest.mark.parametrize("factor", range(7))
def test_each_factor_changed_alone_changes_the_picture(factor):
    for base in ([1, 2, 0, 1, 0, 20, 20], [4, 5, 1, 2, 2, 0, 39]):
        classes = np.repeat([base], TOY[factor], axis=0)
        classes[:, factor] = np.arange(TOY[factor])
        images = md.render(classes).astype(int)
        changed = np.abs(images[:, None] - images[None]).max(axis=-1).sum(axis=(2, 3)) > 0
        pairs = np.count_nonzero(changed[np.triu_indices(TOY[factor], 1)])
        assert pairs == TOY[factor] * (TOY[factor] - 1) // 2  # every two values differ


def test_axes_swing_right_and_raise_the_object():
    along_h = _grid([0], [5], [1], range(3), [0], range(40), [20])
    along_v = _grid([0], [5], [1], range(3), [0], [20], range(40))
    for classes, axis, sign, span in [(along_h, 1, 1, 2 * md._SWING_PX), (along_v, 0, -1, None)]:
        masks = _pixel_masks(classes)
        centre = np.array([np.nonzero(m)[axis].mean() for m in masks]).reshape(3, 40)
        assert (sign * np.diff(centre, axis=1) > 0.2).all()  # monotonic, every step moves it
        if span is not None:
            np.testing.assert_allclose(centre[:, -1] - centre[:, 0], span, atol=0.5)
    # a higher camera sees the vertical motion foreshortened: top 0.75, center 1, bottom 0.85
    masks = _pixel_masks(along_v)
    rows = np.array([np.nonzero(m)[0].mean() for m in masks]).reshape(3, 40)
    travel = rows[:, 0] - rows[:, -1]
    np.testing.assert_allclose(travel, 2 * md._RAISE_PX * np.array([0.75, 1.0, 0.85]), atol=0.6)


@pytest.mark.parametrize("size, min_pixels", [(0, 15), (1, 40)])
def test_shapes_differ_pairwise_at_both_sizes(size, min_pixels):
    """Every two shapes, all else equal, differ clearly (max channel > 40) in at least
    `min_pixels` pixels, for every colour, background and camera height."""
    classes = _grid(range(6), range(6), [size], range(3), range(3), [20], [20])
    images = md.render(classes).astype(int).reshape(6, 6, 9, 64, 64, 3)  # colour, shape, rest
    fewest = min(
        int((np.abs(images[:, a] - images[:, b]).max(axis=-1) > 40).sum(axis=(2, 3)).min())
        for a, b in itertools.combinations(range(6), 2))
    assert fewest >= min_pixels


def test_shape_silhouettes():
    cone, cube, cylinder, hexagonal, pyramid, sphere = _pixel_masks(
        _grid([0], range(6), [1], [1], [0], [20], [20]))
    for mask in (cone, pyramid):  # pointed on top: one or two pixels at the apex row
        rows = np.nonzero(mask)[0]
        assert mask[rows.min()].sum() <= 2 and mask[rows.max() - 3].sum() >= 14
    rows = np.nonzero(cube)[0]
    assert cube[rows.min() + 4:rows.max() - 1].sum(axis=1).min() >= 17  # straight-sided block
    rows, cols = np.nonzero(sphere)
    assert abs((cols.max() - cols.min()) - (rows.max() - rows.min())) <= 1
    assert abs(sphere.sum() - np.pi * md.HALF_SIZES[1] ** 2) < 0.08 * sphere.sum()  # a disc
    rows = np.nonzero(hexagonal)[0]
    widths = hexagonal[rows.min():rows.max() + 1].sum(axis=1)
    assert widths[0] <= 0.65 * widths.max() and widths[-1] <= 0.65 * widths.max()  # cut corners
    assert widths[-1] < widths.max() and cylinder.sum() > hexagonal.sum() * 0.9


def test_object_sizes_in_pixels():
    classes = _grid([0], range(6), [0, 1], range(3), [0], [20], [20])
    for row, mask in zip(classes, _pixel_masks(classes)):
        rows, cols = np.nonzero(mask)
        extent = max(cols.max() - cols.min(), rows.max() - rows.min()) + 1
        low, high = ((10, 13), (16, 20))[row[2]]
        assert low <= extent <= high, (row.tolist(), extent)


def test_object_stays_inside_the_frame_at_extreme_axes():
    classes = _grid([0], range(6), [0, 1], range(3), [0], [0, 39], [0, 39])
    inside = _pixel_masks(classes)
    assert not inside[:, [0, 1, -2, -1], :].any() and not inside[:, :, [0, 1, -2, -1]].any()
    # Drawn on a canvas 12 px wider on every side, with the same pixel grid: anything the
    # 64x64 canvas cut off would show up outside it.
    _, wide = md._draw(classes, margin=12)
    _, frame = md._draw(classes)
    np.testing.assert_array_equal(wide.sum(axis=(1, 2)), frame.sum(axis=(1, 2)))
    assert frame.sum(axis=(1, 2)).min() > 0


def test_colours_stand_apart_from_each_other_and_every_background():
    classes = _grid(range(6), [1, 5], [1], [1], range(3), [20], [20])
    images = md.render(classes).astype(float)
    masks = _pixel_masks(classes)
    means = np.array([img[m].mean(axis=0) for img, m in zip(images, masks)]).reshape(6, 2, 3, 3)
    background = md.BACKGROUNDS[None, None, :, :]
    assert np.linalg.norm(means - background, axis=-1).min() > 60
    per_colour = means.mean(axis=(1, 2))
    gaps = np.linalg.norm(per_colour[:, None] - per_colour[None], axis=-1)
    assert gaps[np.triu_indices(6, 1)].min() > 60
    assert np.linalg.norm(md.BACKGROUNDS[:, None] - md.BACKGROUNDS[None], axis=-1)[
        np.triu_indices(3, 1)].min() > 100


def test_render_rejects_bad_classes():
    with pytest.raises(UserError, match=r"outside the toy factor sizes \[6, 6, 2, 3, 3, 40, 40\]"):
        md.render([[0, 6, 0, 0, 0, 0, 0]])
    with pytest.raises(UserError, match=r"\(N, 7\)"):
        md.render(np.zeros((2, 6), int))


# ---------------------------------------------------------------- npz files


ROWS = np.sort(np.random.default_rng(1).choice(1036800, 120, replace=False))


@pytest.fixture(scope="module")
def rows():
    classes = md.classes_from_flat(ROWS, "toy")
    return classes, md.render(classes)


@pytest.fixture(params=[False, True], ids=["stored", "deflated"])
def small_file(request, tmp_path, rows):
    path = tmp_path / "data" / "small.npz"
    path.parent.mkdir()
    md.write_npz(path, rows[1], compressed=request.param)
    return path, request.param


def test_write_npz_uses_the_real_layout(small_file, rows):
    path, compressed = small_file
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["images.npy"]
        assert zf.getinfo("images.npy").compress_type == (
            zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED)
    assert os.listdir(path.parent) == ["small.npz"]  # no temporary file left behind
    with np.load(path, allow_pickle=False) as npz:
        assert npz["images"].dtype == np.uint8 and npz["images"].shape == (120, 64, 64, 3)
        np.testing.assert_array_equal(npz["images"], rows[1])


def test_read_rows_returns_exactly_the_wanted_rows_sorted(small_file, rows, tmp_path):
    pick = np.random.default_rng(2).choice(120, 30, replace=False)  # unsorted on purpose
    wanted = np.concatenate([ROWS[pick], ROWS[pick[:5]]])  # and with repeats
    images, classes = md.read_rows(small_file[0], wanted, "toy", rows=ROWS,
                                   cache_dir=tmp_path / "cache")
    order = np.sort(pick)
    assert images.dtype == np.uint8 and classes.dtype == np.int64
    assert type(images) is np.ndarray  # a copy, not a view of the mapped file
    np.testing.assert_array_equal(_flat(classes), ROWS[order])
    np.testing.assert_array_equal(classes, rows[0][order])
    np.testing.assert_array_equal(images, rows[1][order])
    none_images, none_classes = md.read_rows(small_file[0], np.array([], np.int64), "toy",
                                             rows=ROWS, cache_dir=tmp_path / "cache")
    assert none_images.shape == (0, 64, 64, 3) and none_classes.shape == (0, 7)


def test_stored_member_is_mapped_in_place(tmp_path, rows, monkeypatch):
    path = tmp_path / "stored.npz"
    md.write_npz(path, rows[1], compressed=False)
    monkeypatch.setattr(md, "_unpacked", lambda *a: pytest.fail("a stored member was unpacked"))
    gathered = []
    real_gather = md._gather
    monkeypatch.setattr(md, "_gather", lambda *a: gathered.append(a[:2]) or real_gather(*a))
    images, _ = md.read_rows(path, ROWS[[0, 119]], "toy", rows=ROWS)
    np.testing.assert_array_equal(images, rows[1][[0, 119]])
    (source, offset), = gathered
    assert source == path
    assert offset == path.read_bytes().index(b"\x93NUMPY") + 128  # the .npy header is 128 bytes
    assert sorted(os.listdir(tmp_path)) == ["stored.npz"]


def test_compressed_member_is_unpacked_once_then_mapped(tmp_path, rows, capsys, monkeypatch):
    path = tmp_path / "deflated.npz"
    md.write_npz(path, rows[1], compressed=True)
    cache_dir = tmp_path / "cache"
    images, _ = md.read_rows(path, ROWS[5:9], "toy", rows=ROWS, cache_dir=cache_dir)
    np.testing.assert_array_equal(images, rows[1][5:9])
    err = capsys.readouterr().err
    assert "stores its images compressed" in err and "1.5 MB of disk" in err
    assert "unpacking deflated.npz" in err and "100%" in err  # the progress bar
    (cache,) = cache_dir.iterdir()
    assert cache.name.startswith("deflated_images_") and cache.suffix == ".npy"
    assert cache.stat().st_size == 128 + 120 * 64 * 64 * 3
    np.testing.assert_array_equal(np.load(cache, mmap_mode="r"), rows[1])
    stamp = (cache.stat().st_ino, cache.stat().st_mtime_ns)

    monkeypatch.setattr(md, "atomic_write", lambda *a: pytest.fail("unpacked a second time"))
    images, _ = md.read_rows(path, ROWS[100:], "toy", rows=ROWS, cache_dir=cache_dir)
    np.testing.assert_array_equal(images, rows[1][100:])
    assert capsys.readouterr().err == ""
    assert list(cache_dir.iterdir()) == [cache]
    assert (cache.stat().st_ino, cache.stat().st_mtime_ns) == stamp


def test_unpacked_copy_defaults_to_the_files_folder_and_follows_its_content(tmp_path, rows):
    path = tmp_path / "deflated.npz"
    md.write_npz(path, rows[1], compressed=True)
    md.read_rows(path, ROWS[:1], "toy", rows=ROWS)
    first = {p.name for p in tmp_path.iterdir()} - {"deflated.npz"}
    assert len(first) == 1
    md.write_npz(path, rows[1][::-1], compressed=True)  # same name, other content
    images, _ = md.read_rows(path, ROWS[:1], "toy", rows=ROWS)
    np.testing.assert_array_equal(images[0], rows[1][-1])
    assert len({p.name for p in tmp_path.iterdir()} - {"deflated.npz"} - first) == 1


def test_unpacking_is_refused_without_the_disk_space(tmp_path, rows, monkeypatch):
    path = tmp_path / "deflated.npz"
    md.write_npz(path, rows[1], compressed=True)
    monkeypatch.setattr(md.shutil, "disk_usage",
                        lambda folder: SimpleNamespace(total=10**12, used=10**12, free=10**6))
    with pytest.raises(UserError) as err:
        md.read_rows(path, ROWS[:3], "toy", rows=ROWS, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "needs an unpacked copy of 1.5 MB (1474688 bytes)" in message
    assert "only 1.0 MB free" in message and "data.cache_dir" in message
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.fixture(scope="module")
def complex_sized(tmp_path_factory, rows):
    """A real-size complex file (460,800 rows, 5.7 GB logical) holding data at 3 rows only:
    the rest is a hole in a sparse file and reads as zeros."""
    path = tmp_path_factory.mktemp("sparse") / "complex_sized.npz"
    md.write_sparse_npz(path, 460800, [7, 1000, 460799], rows[1][:3])
    return path


def test_sparse_file_is_a_valid_full_size_npz(complex_sized, rows):
    assert os.path.getsize(complex_sized) > 460800 * 12288
    assert os.stat(complex_sized).st_blocks * 512 < 20 * 2**20  # holes take no disk
    with zipfile.ZipFile(complex_sized) as zf:
        info = zf.getinfo("images.npy")
        assert info.compress_type == zipfile.ZIP_STORED and info.file_size == 128 + 460800 * 12288
    images, classes = md.read_rows(complex_sized, [460799, 6, 1000, 7], "complex")
    np.testing.assert_array_equal(images[0], np.zeros((64, 64, 3), np.uint8))
    np.testing.assert_array_equal(images[1:], rows[1][[0, 1, 2]])
    np.testing.assert_array_equal(classes[-1], [3, 3, 1, 2, 2, 39, 39])
    small = complex_sized.parent / "small_sparse.npz"
    md.write_sparse_npz(small, 50, [3, 49], rows[1][:2])
    with zipfile.ZipFile(small) as zf:
        assert zf.testzip() is None  # CRC-32 matches the bytes, holes included
    with np.load(small) as npz:
        np.testing.assert_array_equal(npz["images"][[3, 49]], rows[1][:2])
        assert npz["images"][[0, 4, 48]].max() == 0


def test_a_file_of_another_variant_is_refused_naming_both_counts(complex_sized, tmp_path):
    with pytest.raises(UserError) as err:
        md.read_rows(complex_sized, [0], "toy")
    message = str(err.value)
    assert ("has 460800 images but variant 'toy' has 1036800 (sizes [6, 6, 2, 3, 3, 40, 40]); "
            "set data.variant='complex' (sizes [4, 4, 2, 3, 3, 40, 40])") in message
    assert "mpi3d_toy.npz" in message and "github.com/rr-learning" in message
    odd = tmp_path / "odd.npz"
    md.write_sparse_npz(odd, 1000, [], np.zeros((0, 64, 64, 3), np.uint8))
    with pytest.raises(UserError, match=r"has 1000 images but variant 'real' has 1036800 .*no "
                                        r"variant has that many"):
        md.read_rows(odd, [0], "real")


def test_load_images_with_a_path_reads_that_file(complex_sized, rows, tmp_path):
    images, classes = md.load_images(str(complex_sized), [1000, 7], tmp_path / "c", "complex")
    np.testing.assert_array_equal(images, rows[1][[0, 1]])
    np.testing.assert_array_equal(_flat(classes, "complex"), [7, 1000])
    assert not (tmp_path / "c").exists()  # a stored member needs no cache


class _Payload:
    """Unpickling this touches a file: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _write_members(path, arrays, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for key, array in arrays.items():
            with zf.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=True)


def _bad_file(kind, tmp_path, rows):
    path = tmp_path / f"{kind}.npz"
    images = rows[1][:5]
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(4).bytes(5000))
    elif kind in ("truncated", "corrupt"):
        good = tmp_path / "good.npz"
        md.write_npz(good, images, compressed=True)
        data = bytearray(good.read_bytes())
        if kind == "truncated":
            data = data[:len(data) // 2]
        else:
            data[len(data) // 2:len(data) // 2 + 64] = bytes(range(64))
        path.write_bytes(bytes(data))
    elif kind == "no_images":
        _write_members(path, {"imgs": images, "labels": np.zeros(5)})
    elif kind == "float_images":
        _write_members(path, {"images": images.astype(np.float32)})
    elif kind == "grey_images":
        _write_members(path, {"images": images[..., 0]})
    elif kind == "fortran":
        _write_members(path, {"images": np.asfortranarray(images)}, zipfile.ZIP_STORED)
    elif kind == "pickled":
        payload = np.empty(2, dtype=object)
        payload[:] = [_Payload(tmp_path / "pwned"), _Payload(tmp_path / "pwned")]
        _write_members(path, {"images": payload})
    elif kind == "short_rows":
        md.write_npz(path, images[:4], compressed=False)
    return path


@pytest.mark.parametrize("kind, fact", [
    ("missing", "does not exist"),
    ("empty", "is empty (0 bytes)"),
    ("garbage", "is not an npz (zip) file"),
    ("truncated", "is truncated"),
    ("corrupt", "is corrupt or unreadable"),
    ("no_images", "has no 'images' array; found ['imgs', 'labels']"),
    ("float_images", "images has dtype float32, expected uint8"),
    ("grey_images", "images has shape (5, 64, 64), expected (N, 64, 64, 3)"),
    ("fortran", "images is stored in Fortran order; expected C order"),
    ("pickled", "images has dtype object, expected uint8"),
    ("short_rows", "has 4 images but rows= lists 5 flat indices"),
])
def test_bad_files_raise_user_error_naming_the_problem(kind, fact, tmp_path, rows):
    path = _bad_file(kind, tmp_path, rows)
    with pytest.raises(UserError) as err:
        md.read_rows(path, ROWS[:2], "toy", rows=ROWS[:5], cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert fact in message and str(path) in message and "\n" not in message
    assert "download mpi3d_toy.npz from github.com/rr-learning/disentanglement_dataset" in message
    assert "data.path=''" in message
    assert not (tmp_path / "pwned").exists()
    leftovers = list((tmp_path / "cache").iterdir()) if (tmp_path / "cache").exists() else []
    assert leftovers == []  # a failed unpack leaves no partial copy


def test_wanted_rows_absent_from_a_small_file_are_counted(small_file, tmp_path):
    absent = np.setdiff1d(np.arange(2000), ROWS)[:7]
    with pytest.raises(UserError) as err:
        md.read_rows(small_file[0], np.concatenate([ROWS[:3], absent]), "toy", rows=ROWS,
                     cache_dir=tmp_path / "cache")
    assert (f"7 of the 10 requested images are not in the file, e.g. flat index {absent[0]} "
            "{'object_color': 0") in str(err.value)


def test_rows_argument_must_be_strictly_increasing(small_file):
    with pytest.raises(UserError, match="strictly increasing"):
        md.read_rows(small_file[0], ROWS[:2], "toy", rows=ROWS[::-1])


# ---------------------------------------------------------------- stand-in cache


def test_load_images_procedural_cache_is_written_once_and_reused(tmp_path, capsys):
    cache_dir = tmp_path / "cache" / "mpi3d"
    wanted = np.array([1036799, 5, 172800, 123456, 0])
    images, classes = md.load_images("", wanted, cache_dir, "toy")
    assert "rendering the MPI3D toy stand-in" in capsys.readouterr().err
    (cache,) = cache_dir.iterdir()
    assert cache.name.startswith("mpi3d_toy_procedural_v1_") and cache.suffix == ".npz"
    with zipfile.ZipFile(cache) as zf:
        assert [(i.filename, i.compress_type) for i in zf.infolist()] == [
            ("images.npy", zipfile.ZIP_STORED)]
    mtime = cache.stat().st_mtime_ns
    again_images, again_classes = md.load_images("", wanted[::-1], cache_dir, "toy")
    assert capsys.readouterr().err == ""
    assert list(cache_dir.iterdir()) == [cache] and cache.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again_images, images)
    np.testing.assert_array_equal(again_classes, classes)
    np.testing.assert_array_equal(classes, md.classes_from_flat(np.sort(wanted), "toy"))
    np.testing.assert_array_equal(images, md.render(classes))
    md.load_images("", wanted[:2], cache_dir, "toy")
    assert len(list(cache_dir.iterdir())) == 2  # another subset, another cache file


@pytest.mark.parametrize("variant", ["realistic", "real", "complex"])
def test_only_the_toy_variant_has_a_stand_in(variant, tmp_path):
    with pytest.raises(UserError) as err:
        md.load_images("", [0], tmp_path, variant)
    message = str(err.value)
    assert f"variant '{variant}' has no procedural stand-in" in message
    assert md.VARIANTS[variant][0] in message and "data.variant='toy'" in message
    assert list(tmp_path.iterdir()) == []


def test_pictures_start_from_a_large_contrasting_object_near_the_middle():
    import torch

    from mpi3d.log import showcase

    def row(color, size, background, horizontal, vertical):
        values = {"object_color": color, "object_shape": 0, "object_size": size,
                  "camera_height": 0, "background_color": background,
                  "horizontal_axis": horizontal, "vertical_axis": vertical}
        return [values[name] for name in md.FACTOR_NAMES]

    rows = [row(0, 0, 0, 20, 20),  # small
            row(2, 1, 2, 20, 20),  # red on salmon: too little contrast
            row(0, 1, 0, 0, 36),  # large white on purple, in a corner
            row(3, 1, 2, 16, 24),  # large blue on salmon, near the middle: this one
            row(1, 1, 0, 36, 36)]
    data = SimpleNamespace(classes={"test": torch.tensor(rows)},
                           space=SimpleNamespace(factor_names=md.FACTOR_NAMES))
    assert showcase(data) == 3
    data.classes["test"] = torch.tensor(rows[:2])
    assert showcase(data) == 0  # none qualifies: the first test image

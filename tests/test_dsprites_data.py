"""dSprites data files: factor grid, procedural renderer, npz reader/writer, stand-in cache."""
import os
import pathlib
import zipfile

import numpy as np
import pytest

from common.errors import UserError
from dsprites import dataset as ds


def _flat(classes):
    return np.asarray(classes) @ np.array(ds.FACTOR_BASES)


def _grid(shape, scale, orientation, pos_x, pos_y):
    """All combinations of the given factor indices, as (N, 6) classes."""
    mesh = np.meshgrid([0], shape, scale, orientation, pos_x, pos_y, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


# ---------------------------------------------------------------- factor grid


def test_factor_grids_match_published_values():
    values = ds.factor_values()
    assert [len(v) for v in values] == list(ds.FACTOR_SIZES) == [1, 3, 6, 40, 32, 32]
    assert all(v.dtype == np.float64 for v in values)
    np.testing.assert_array_equal(values[0], [1.0])
    np.testing.assert_array_equal(values[1], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(values[2], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert values[3][0] == 0.0 and values[3][-1] == 2 * np.pi
    np.testing.assert_allclose(np.diff(values[3]), 2 * np.pi / 39)
    for pos in values[4:]:
        assert pos[0] == 0.0 and pos[-1] == 1.0
        np.testing.assert_allclose(np.diff(pos), 1 / 31)


def test_bases_are_row_major_strides():
    sizes = np.array(ds.FACTOR_SIZES)
    strides = [int(np.prod(sizes[i + 1:])) for i in range(6)]
    assert ds.FACTOR_BASES == (737280, 245760, 40960, 1024, 32, 1)
    assert list(ds.FACTOR_BASES[1:]) == strides[1:]  # color has one value, so its base is free
    assert np.prod(sizes) == 737280


def test_classes_from_flat_known_rows_and_round_trip():
    flat = np.array([0, 1, 32, 1024, 40960, 245760, 737279])
    expected = [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0],
                [0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0],
                [0, 2, 5, 39, 31, 31]]
    classes = ds.classes_from_flat(flat)
    assert classes.dtype == np.int64
    np.testing.assert_array_equal(classes, expected)
    every = np.arange(737280)
    np.testing.assert_array_equal(_flat(ds.classes_from_flat(every)), every)


def test_classes_from_flat_rejects_out_of_range():
    with pytest.raises(UserError, match="737280"):
        ds.classes_from_flat([737280])
    with pytest.raises(UserError, match="integer"):
        ds.classes_from_flat([0.5])


# ---------------------------------------------------------------- renderer


def test_render_shape_dtype_values_and_determinism():
    classes = ds.classes_from_flat(np.random.default_rng(0).choice(737280, 500, replace=False))
    imgs = ds.render(classes)
    assert imgs.shape == (500, 64, 64) and imgs.dtype == np.uint8
    assert set(np.unique(imgs)) == {0, 1}
    assert imgs.sum(axis=(1, 2)).min() > 20  # every sprite is visible
    np.testing.assert_array_equal(imgs, ds.render(classes))


def test_orientation_0_and_39_are_the_same_picture():
    first = _grid([0, 1, 2], range(6), [0], [0, 9, 31], [3, 20])
    last = first.copy()
    last[:, 3] = 39
    np.testing.assert_array_equal(ds.render(first), ds.render(last))
    turned = first.copy()
    turned[:, 3] = 5
    assert (ds.render(turned) != ds.render(first)).sum(axis=(1, 2)).min() > 0


def test_shapes_differ_and_heart_is_not_the_ellipse():
    classes = _grid([0, 1, 2], [5], range(40), [16], [16]).reshape(3, 40, 6)
    square, ellipse, heart = (ds.render(c).astype(int) for c in classes)
    for a, b in [(square, ellipse), (square, heart), (ellipse, heart)]:
        assert np.abs(a - b).sum(axis=(1, 2)).min() > 10


def _half_counts(img):
    """Pixels above and below the middle row of the sprite's bounding box."""
    rows = np.nonzero(img)[0]
    middle = (rows.min() + rows.max()) / 2
    per_row = img.sum(axis=1).astype(int)
    return per_row[:int(np.ceil(middle))].sum(), per_row[int(middle) + 1:].sum()


def test_shape_sizes_and_silhouettes_at_scale_one():
    square, ellipse, heart = ds.render(_grid([0, 1, 2], [5], [0], [16], [16]))
    for img, (width, height) in [(square, (18, 20)), (ellipse, (19, 23)), (heart, (18, 22))]:
        rows, cols = np.nonzero(img)
        assert width <= cols.max() - cols.min() + 1 <= height
    rows, cols = np.nonzero(ellipse)
    assert cols.max() - cols.min() >= 1.8 * (rows.max() - rows.min())  # an oval, not a circle
    top, bottom = _half_counts(heart)
    assert top > 1.4 * bottom  # two lobes on top, a point at the bottom
    top, bottom = _half_counts(ellipse)
    assert abs(top - bottom) <= 3


def test_posx_moves_right_and_posy_moves_down():
    along_x = ds.render(_grid([0, 1, 2], [3], [7], range(32), [10]).reshape(-1, 6))
    along_y = ds.render(_grid([0, 1, 2], [3], [7], [10], range(32)).reshape(-1, 6))
    span = ds.CENTRE_MAX - ds.CENTRE_MIN
    for imgs, axis in [(along_x, 1), (along_y, 0)]:
        com = np.array([np.nonzero(img)[axis].mean() for img in imgs]).reshape(3, 32)
        assert (np.diff(com, axis=1) > 0.5).all()
        np.testing.assert_allclose(com[:, -1] - com[:, 0], span, atol=1.0)
        other = np.array([np.nonzero(img)[1 - axis].mean() for img in imgs]).reshape(3, 32)
        assert np.ptp(other, axis=1).max() < 1.0


def test_nothing_is_clipped_at_extreme_positions():
    classes = _grid([0, 1, 2], range(6), range(40), [0, 31], [0, 31])
    imgs = ds.render(classes)
    assert not imgs[:, [0, -1], :].any() and not imgs[:, :, [0, -1]].any()
    # The same sprites drawn on a canvas 16 px larger on every side, with the same pixel
    # grid: anything the 64x64 canvas had cut off would show up outside it.
    wide = ds._draw(classes, margin=16)
    np.testing.assert_array_equal(wide.sum(axis=(1, 2)), imgs.sum(axis=(1, 2)))
    np.testing.assert_array_equal(wide[:, 16:80, 16:80], imgs.astype(bool))


def test_bigger_scale_gives_more_pixels():
    counts = ds.render(_grid([0, 1, 2], range(6), [0, 13], [16], [16])).sum(axis=(1, 2))
    counts = counts.reshape(3, 6, 2)
    assert (np.diff(counts, axis=1) > 0).all()
    assert (counts[:, -1] > 2.5 * counts[:, 0]).all()  # area grows like scale^2: 4x


def test_render_rejects_bad_classes():
    with pytest.raises(UserError, match="outside FACTOR_SIZES"):
        ds.render([[0, 3, 0, 0, 0, 0]])
    with pytest.raises(UserError, match=r"\(N, 6\)"):
        ds.render(np.zeros((2, 5), int))


# ---------------------------------------------------------------- npz files


ROWS = np.sort(np.random.default_rng(1).choice(737280, 300, replace=False))


@pytest.fixture(scope="module")
def rows():
    classes = ds.classes_from_flat(ROWS)
    return classes, ds.render(classes)


@pytest.fixture(params=[True, False], ids=["deflated", "stored"])
def small_file(request, tmp_path, rows):
    path = tmp_path / "small.npz"
    ds.write_npz(path, rows[1], rows[0], compressed=request.param)
    return path, request.param


def test_write_npz_uses_the_real_layout(small_file, rows):
    path, compressed = small_file
    with zipfile.ZipFile(path) as zf:
        names = sorted(zf.namelist())
        methods = {info.compress_type for info in zf.infolist()}
    assert names == ["imgs.npy", "latents_classes.npy", "latents_values.npy", "metadata.npy"]
    assert methods == {zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED}
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with np.load(path, allow_pickle=False) as npz:
        assert npz["imgs"].dtype == np.uint8 and npz["imgs"].shape == (300, 64, 64)
        assert npz["latents_classes"].dtype == np.int64
        np.testing.assert_array_equal(npz["latents_classes"], rows[0])
        values = npz["latents_values"]
        assert values.dtype == np.float64 and values.shape == (300, 6)
        np.testing.assert_array_equal(values[:, 3], ds.factor_values()[3][rows[0][:, 3]])
        with pytest.raises(ValueError, match="pickle"):
            npz["metadata"]  # a pickled object array, like the real file's


def test_read_rows_returns_exactly_the_wanted_rows_sorted(small_file, rows):
    pick = np.random.default_rng(2).choice(300, 40, replace=False)  # unsorted on purpose
    imgs, classes = ds.read_rows(small_file[0], ROWS[pick])
    order = np.sort(pick)
    assert imgs.dtype == np.uint8 and classes.dtype == np.int64
    np.testing.assert_array_equal(_flat(classes), np.sort(ROWS[pick]))
    np.testing.assert_array_equal(classes, rows[0][order])
    np.testing.assert_array_equal(imgs, rows[1][order])


def test_read_rows_from_a_shuffled_file(tmp_path, rows):
    perm = np.random.default_rng(3).permutation(300)
    path = tmp_path / "shuffled.npz"
    ds.write_npz(path, rows[1][perm], rows[0][perm])
    pick = np.array([299, 0, 150, 7, 42])
    imgs, classes = ds.read_rows(path, ROWS[pick])
    np.testing.assert_array_equal(classes, rows[0][np.sort(pick)])
    np.testing.assert_array_equal(imgs, rows[1][np.sort(pick)])
    empty_imgs, empty_classes = ds.read_rows(path, np.array([], np.int64))
    assert empty_imgs.shape == (0, 64, 64) and empty_classes.shape == (0, 6)


class _Payload:
    """Unpickling this touches a file: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _write_members(path, metadata=None, **arrays):
    """Write npz members as given, pickling object arrays (as an attacker would)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        if metadata is not None:
            arrays["metadata"] = metadata
        for key, array in arrays.items():
            with zf.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=True)


def _payload_array(marker):
    array = np.empty(2, dtype=object)
    array[:] = [_Payload(marker), _Payload(marker)]
    return array


def _real_members(rows, n=5):
    classes, imgs = rows[0][:n], rows[1][:n]
    values = np.stack([g[classes[:, i]] for i, g in enumerate(ds.factor_values())], axis=1)
    return {"imgs": imgs, "latents_values": values, "latents_classes": classes}


def test_pickled_imgs_are_refused_without_unpickling(tmp_path, rows):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    members = _real_members(rows, 2)
    members["imgs"] = _payload_array(marker)
    _write_members(path, **members)
    with pytest.raises(UserError, match=r"imgs has dtype object, expected uint8"):
        ds.read_rows(path, ROWS[:2])
    assert not marker.exists()
    with np.load(path, allow_pickle=True) as npz:  # the payload is live: loading it fires
        npz["imgs"]
    assert marker.exists()


def test_pickled_metadata_is_never_loaded(tmp_path, rows):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_metadata.npz"
    _write_members(path, metadata=_payload_array(marker), **_real_members(rows))
    imgs, _ = ds.read_rows(path, ROWS[:5])
    np.testing.assert_array_equal(imgs, rows[1][:5])
    assert not marker.exists()


def _bad_file(kind, tmp_path, rows):
    """Write one kind of broken file; return its path."""
    path = tmp_path / f"{kind}.npz"
    members = _real_members(rows)
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind in ("truncated", "corrupt"):
        good = tmp_path / "good.npz"
        ds.write_npz(good, rows[1], rows[0])
        data = bytearray(good.read_bytes())
        if kind == "truncated":
            data = data[:len(data) // 2]
        else:
            with zipfile.ZipFile(good) as zf:
                info = zf.getinfo("imgs.npy")
            start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
            data[start:start + 64] = bytes(range(64))
        path.write_bytes(bytes(data))
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(4).bytes(5000))
    else:
        if kind == "no_classes":
            del members["latents_classes"]
        elif kind == "float_imgs":
            members["imgs"] = members["imgs"].astype(np.float32)
        elif kind == "small_imgs":
            members["imgs"] = members["imgs"][:, :32, :32]
        elif kind == "out_of_range":
            members["latents_classes"] = members["latents_classes"].copy()
            members["latents_classes"][3, 2] = 6
        elif kind == "pixel_255":
            members["imgs"] = members["imgs"] * np.uint8(255)
        _write_members(path, **members)
    return path


@pytest.mark.parametrize("kind, fact", [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("truncated", "truncated"),
    ("corrupt", "corrupt"),
    ("garbage", "not an npz"),
    ("no_classes", "missing key(s) latents_classes"),
    ("float_imgs", "imgs has dtype float32, expected uint8"),
    ("small_imgs", "imgs has shape (5, 32, 32), expected (N, 64, 64)"),
    ("out_of_range", "outside FACTOR_SIZES (1, 3, 6, 40, 32, 32), e.g. row 3"),
    ("pixel_255", "outside {0, 1}"),
])
def test_bad_files_raise_user_error_naming_the_problem(kind, fact, tmp_path, rows):
    path = _bad_file(kind, tmp_path, rows)
    with pytest.raises(UserError) as err:
        ds.read_rows(path, ROWS[:5])
    message = str(err.value)
    assert fact in message
    assert "\n" not in message and ds.FILE_NAME in message and "data.path=''" in message


def test_wanted_rows_absent_are_counted(small_file):
    absent = np.setdiff1d(np.arange(1000), ROWS)[:7]
    with pytest.raises(UserError) as err:
        ds.read_rows(small_file[0], np.concatenate([ROWS[:3], absent]))
    assert f"7 of the 10 requested images are not in the file, e.g. flat index {absent[0]}" \
        in str(err.value)


# ---------------------------------------------------------------- stand-in cache


def test_load_images_procedural_cache_is_written_once_and_reused(tmp_path):
    cache_dir = tmp_path / "cache" / "dsprites"
    wanted = np.array([737279, 5, 40960, 123456, 0])
    imgs, classes = ds.load_images("", wanted, cache_dir)
    files = list(cache_dir.iterdir())
    assert len(files) == 1 and files[0].name.startswith("dsprites_procedural_v1_")
    mtime = os.stat(files[0]).st_mtime_ns
    again_imgs, again_classes = ds.load_images("", wanted[::-1], cache_dir)
    assert list(cache_dir.iterdir()) == files and os.stat(files[0]).st_mtime_ns == mtime
    np.testing.assert_array_equal(again_imgs, imgs)
    np.testing.assert_array_equal(again_classes, classes)
    np.testing.assert_array_equal(classes, ds.classes_from_flat(np.sort(wanted)))
    np.testing.assert_array_equal(imgs, ds.render(classes))
    ds.load_images("", wanted[:2], cache_dir)
    assert len(list(cache_dir.iterdir())) == 2  # another subset, another cache file


def test_load_images_with_a_path_reads_that_file(small_file, rows):
    imgs, classes = ds.load_images(str(small_file[0]), ROWS[10:20], "/nonexistent")
    np.testing.assert_array_equal(imgs, rows[1][10:20])
    np.testing.assert_array_equal(classes, rows[0][10:20])

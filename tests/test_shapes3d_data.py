"""Shapes3D data files: factor grid, procedural renderer, h5 reader/writer, stand-in cache."""
import colorsys
import os

import h5py
import numpy as np
import pytest
import torch

from common.errors import UserError
from shapes3d import dataset as ds


def _flat(classes):
    return np.asarray(classes) @ np.array(ds.FACTOR_BASES)


def _grid(*values):
    """All combinations of the given factor indices, as (N, 6) classes (orientation fastest)."""
    mesh = np.meshgrid(*values, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def _changed(classes, factor):
    """(N, 64, 64) bool: the pixels that change when hue factor `factor` moves by 5 steps,
    i.e. where that surface (0 floor, 1 wall, 2 object) shows, fully or in part."""
    other = np.array(classes)
    other[:, factor] = (other[:, factor] + 5) % 10
    return (ds.render(classes) != ds.render(other)).any(axis=-1)


# ---------------------------------------------------------------- factor grid


def test_factor_grids_match_published_values():
    values = ds.factor_values()
    assert [len(v) for v in values] == list(ds.FACTOR_SIZES) == [10, 10, 10, 8, 4, 15]
    assert all(v.dtype == np.float64 for v in values)
    for hues in values[:3]:
        np.testing.assert_allclose(hues, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    np.testing.assert_allclose(values[3], [0.75, 0.82142857, 0.89285714, 0.96428571,
                                           1.03571429, 1.10714286, 1.17857143, 1.25])
    np.testing.assert_array_equal(values[4], [0.0, 1.0, 2.0, 3.0])
    assert values[5][0] == -30.0 and values[5][7] == 0.0 and values[5][-1] == 30.0
    np.testing.assert_allclose(np.diff(values[5]), 60 / 14)


def test_bases_are_row_major_strides():
    sizes = np.array(ds.FACTOR_SIZES)
    assert list(ds.FACTOR_BASES) == [int(np.prod(sizes[i + 1:])) for i in range(6)]
    assert ds.FACTOR_BASES == (48000, 4800, 480, 60, 15, 1)
    assert np.prod(sizes) == ds.NUM_IMAGES == 480000
    assert ds.IMAGE_SHAPE == (64, 64, 3) and ds.FILE_NAME == "3dshapes.h5"


def test_classes_from_flat_known_rows_and_round_trip():
    flat = np.array([0, 1, 15, 60, 480, 4800, 48000, 479999])
    expected = [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0],
                [0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0],
                [1, 0, 0, 0, 0, 0], [9, 9, 9, 7, 3, 14]]
    classes = ds.classes_from_flat(flat)
    assert classes.dtype == np.int64
    np.testing.assert_array_equal(classes, expected)
    every = np.arange(480000)
    np.testing.assert_array_equal(_flat(ds.classes_from_flat(every)), every)


def test_classes_from_flat_rejects_bad_input():
    with pytest.raises(UserError, match=r"\[0, 480000\), got 480000\.\.480000"):
        ds.classes_from_flat([480000])
    with pytest.raises(UserError, match=r"got -1\.\."):
        ds.classes_from_flat([-1, 5])
    with pytest.raises(UserError, match="1-D integer array, got float64"):
        ds.classes_from_flat([0.5])
    with pytest.raises(UserError, match=r"shape \(2, 2\)"):
        ds.classes_from_flat([[1, 2], [3, 4]])


# ---------------------------------------------------------------- renderer


def test_render_shape_dtype_and_determinism():
    classes = ds.classes_from_flat(np.random.default_rng(0).choice(480000, 120, replace=False))
    images = ds.render(classes)
    assert images.shape == (120, 64, 64, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, ds.render(classes))
    # the same pictures one at a time, and from a cold geometry cache
    ds._layers.cache_clear()
    np.testing.assert_array_equal(images[:10], np.concatenate([ds.render(c[None])
                                                               for c in classes[:10]]))


@pytest.mark.parametrize("base", [[3, 6, 1, 4, 2, 7], [0, 9, 5, 0, 0, 0], [5, 5, 5, 7, 3, 14]])
def test_each_factor_alone_changes_the_picture(base):
    # the fewest pixels that change by a visible amount between neighbouring values
    least = {"floor_hue": 1000, "wall_hue": 1000, "object_hue": 100, "scale": 30,
             "shape": 100, "orientation": 10}
    for factor, name in enumerate(ds.FACTOR_NAMES):
        classes = np.array([base] * ds.FACTOR_SIZES[factor])
        classes[:, factor] = np.arange(ds.FACTOR_SIZES[factor])
        images = ds.render(classes).astype(int)
        changed = (np.abs(np.diff(images, axis=0)).sum(axis=-1) > 30).sum(axis=(1, 2))
        assert changed.min() >= least[name], (name, changed.tolist())


def _hue(rgb):
    return colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255))


def test_hues_are_hsv_hues_at_full_saturation():
    for k, hue in enumerate(ds.factor_values()[0]):
        np.testing.assert_allclose(ds._hue_rgb(hue), colorsys.hsv_to_rgb(hue, 1.0, 1.0),
                                   atol=1e-12)
    # Pixels where one surface alone shows: its hue is the factor value, whatever the shading,
    # so neighbouring hues differ by 0.1 in the right direction.
    for surface in range(3):
        classes = np.array([[2, 5, 8, 6, 1, 4]] * 10)
        classes[:, surface] = np.arange(10)
        images = ds.render(classes)
        only = np.ones((64, 64), bool)
        for other in range(3):
            weight = ds._layers(6, 1, 4)[..., other]
            only &= (weight > 0) if other == surface else (weight == 0)
        assert only.sum() > 150
        unseen = ds._layers(6, 1, 4)[..., surface] == 0
        assert unseen.sum() > 150
        for k in range(10):
            h, s, _ = _hue(images[k][only].mean(axis=0))
            assert min(abs(h - k / 10), 1 - abs(h - k / 10)) < 0.01 and s > 0.97, (surface, k)
            # pixels where the surface does not show keep their colour
            np.testing.assert_array_equal(images[k][unseen], images[0][unseen])


def test_bigger_scale_gives_more_object_pixels():
    classes = _grid([7], [7], [0], range(8), range(4), [0, 7, 14])
    counts = _changed(classes, 2).sum(axis=(1, 2)).reshape(8, 4, 3)
    assert (np.diff(counts, axis=0) >= 8).all(), counts.tolist()
    assert (counts[-1] > 2.2 * counts[0]).all()  # area grows like scale^2: (1.25 / 0.75)^2 = 2.8


def test_objects_are_15_to_32_px_tall_and_never_clipped():
    classes = _grid([7], [7], [0], [0, 7], range(4), range(15))
    masks = _changed(classes, 2).reshape(2, 4, 15, 64, 64)
    rows = masks.any(axis=-1)
    heights = 64 - np.argmax(rows, axis=-1) - np.argmax(rows[..., ::-1], axis=-1)
    assert heights[0].min() >= 15 and heights[1].max() <= 32, heights.tolist()
    assert not masks[..., [0, -1], :].any() and not masks[..., :, [0, -1]].any()


def test_shapes_differ_at_the_smallest_scale_from_every_side():
    images = ds.render(_grid([0], [5], [3], [0], range(4), range(15))).astype(int)
    images = images.reshape(4, 15, 64, 64, 3)
    for a in range(4):
        for b in range(a + 1, 4):
            changed = (np.abs(images[a] - images[b]).sum(axis=-1) > 60).sum(axis=(1, 2))
            assert changed.min() >= 50, (ds.SHAPE_NAMES[a], ds.SHAPE_NAMES[b], changed.tolist())
    # silhouettes at orientation 0: the capsule is tall, the sphere round, the cube and
    # cylinder about as wide as tall
    masks = _changed(_grid([7], [7], [0], [7], range(4), [7]), 2)
    for shape, mask in enumerate(masks):
        r, c = np.nonzero(mask)
        height, width = r.max() - r.min() + 1, c.max() - c.min() + 1
        low, high = {0: (1.0, 1.3), 1: (1.0, 1.3), 2: (0.95, 1.05), 3: (1.7, 2.1)}[shape]
        assert low <= height / width <= high, (ds.SHAPE_NAMES[shape], height, width)


def test_orientation_turns_the_camera_and_tilts_the_floor_edge():
    floor = _changed(_grid([0], [5], [3], [0], [2], range(15)), 0)
    top = np.argmax(floor, axis=1)  # (15, 64): first floor row of each column
    left, right = top[:, 1], top[:, 62]
    assert abs(left[7] - right[7]) <= 1  # facing the wall square on, the edge is level
    assert right[0] - left[0] >= 8 and left[14] - right[14] >= 8
    tilt = right - left  # rows, so a step of 4.3 degrees may move it by less than one
    assert (np.diff(tilt) <= 0).all() and tilt[0] - tilt[14] >= 20


def test_floor_is_lambert_shaded_with_the_object_shadow():
    # floor hue 0 is pure red: the red channel of floor-only pixels is 255 * shade
    image = ds.render([[0, 5, 3, 4, 0, 7]])[0]
    floor_only = (ds._layers(4, 0, 7)[..., 1:] == 0).all(axis=-1)
    values, counts = np.unique(image[floor_only][:, 0], return_counts=True)
    # k of a pixel's 9 rays lit, the floor normal being +y; the rest in the cube's shadow
    levels = [round(255 * (ds.AMBIENT + (1 - ds.AMBIENT) * ds.LIGHT[1] * k / 9))
              for k in range(10)]
    assert set(values.tolist()) <= set(levels), values.tolist()
    count = dict(zip(values.tolist(), counts.tolist()))
    assert count[levels[9]] > 1000 and count[levels[0]] > 40
    assert not image[floor_only][:, 1:].any()


def test_render_rejects_bad_classes():
    with pytest.raises(UserError, match=r"row 1 = \[0, 0, 0, 8, 0, 0\] is outside FACTOR_SIZES"):
        ds.render([[0, 0, 0, 0, 0, 0], [0, 0, 0, 8, 0, 0]])
    with pytest.raises(UserError, match=r"\(N, 6\)"):
        ds.render(np.zeros((2, 5), int))


# ---------------------------------------------------------------- h5 files


ROWS = np.sort(np.random.default_rng(1).choice(480000, 200, replace=False))


@pytest.fixture(scope="module")
def rows():
    classes = ds.classes_from_flat(ROWS)
    return classes, ds.render(classes)


@pytest.fixture
def small_file(tmp_path, rows):
    path = tmp_path / "small.h5"
    ds.write_h5(path, rows[1], rows[0])
    return path


def test_write_h5_uses_the_real_layout(small_file, rows):
    assert sorted(os.listdir(small_file.parent)) == ["small.h5"]  # no temporary left behind
    with h5py.File(small_file, "r") as f:
        assert sorted(f.keys()) == ["images", "labels"]
        images, labels = f["images"], f["labels"]
        assert images.dtype == np.uint8 and images.shape == (200, 64, 64, 3)
        assert labels.dtype == np.float64 and labels.shape == (200, 6)
        assert images.chunks == (64, 64, 64, 3) and images.compression == "gzip"
        np.testing.assert_array_equal(images[:], rows[1])
        expected = np.stack([g[rows[0][:, i]] for i, g in enumerate(ds.factor_values())], 1)
        np.testing.assert_array_equal(labels[:], expected)


def test_writers_refuse_bad_arguments_and_leave_no_file(tmp_path, rows):
    with pytest.raises(UserError, match=r"write_h5\(images\) must be uint8 of shape \(200, 64, "
                                        r"64, 3\), got uint8 \(199, 64, 64, 3\)"):
        ds.write_h5(tmp_path / "a.h5", rows[1][1:], rows[0])
    with pytest.raises(UserError, match=r"write_h5\(classes\) row 0 = \[10, "):
        ds.write_h5(tmp_path / "a.h5", rows[1][:1], rows[0][:1] + [10, 0, 0, 0, 0, 0])
    with pytest.raises(UserError, match="sorted and unique"):
        ds.write_sparse_h5(tmp_path / "b.h5", [5, 3], rows[1][:2])
    assert os.listdir(tmp_path) == []


def test_read_rows_returns_exactly_the_wanted_rows_sorted(small_file, rows):
    pick = np.random.default_rng(2).choice(200, 40, replace=False)  # unsorted on purpose
    images, classes = ds.read_rows(small_file, ROWS[pick])
    order = np.sort(pick)
    assert images.dtype == np.uint8 and classes.dtype == np.int64
    np.testing.assert_array_equal(_flat(classes), np.sort(ROWS[pick]))
    np.testing.assert_array_equal(classes, rows[0][order])
    np.testing.assert_array_equal(images, rows[1][order])


def test_read_rows_from_a_shuffled_file(tmp_path, rows):
    perm = np.random.default_rng(3).permutation(200)
    path = tmp_path / "shuffled.h5"
    ds.write_h5(path, rows[1][perm], rows[0][perm])
    pick = np.array([199, 0, 150, 7, 42])
    images, classes = ds.read_rows(path, ROWS[pick])
    np.testing.assert_array_equal(classes, rows[0][np.sort(pick)])
    np.testing.assert_array_equal(images, rows[1][np.sort(pick)])
    empty_images, empty_classes = ds.read_rows(path, np.array([], np.int64))
    assert empty_images.shape == (0, 64, 64, 3) and empty_classes.shape == (0, 6)


def _write_raw(path, images=None, labels=None):
    with h5py.File(path, "w") as f:
        if images is not None:
            f.create_dataset("images", data=images)
        if labels is not None:
            f.create_dataset("labels", data=labels)


def _bad_file(kind, tmp_path, rows):
    """Write one kind of broken file; return its path."""
    path = tmp_path / f"{kind}.h5"
    images = rows[1][:5]
    labels = np.stack([g[rows[0][:5, i]] for i, g in enumerate(ds.factor_values())], axis=1)
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(4).bytes(5000))
    elif kind in ("truncated", "corrupt"):
        good = tmp_path / "good.h5"
        ds.write_h5(good, rows[1], rows[0])
        data = bytearray(good.read_bytes())
        if kind == "truncated":
            data = data[:len(data) // 2]
        else:
            with h5py.File(good, "r") as f:
                offset = f["images"].id.get_chunk_info(0).byte_offset
            data[offset + 100:offset + 164] = bytes(range(64))
        path.write_bytes(bytes(data))
    elif kind == "no_labels":
        _write_raw(path, images=images)
    elif kind == "float_images":
        _write_raw(path, images.astype(np.float32), labels)
    elif kind == "small_images":
        _write_raw(path, images[:, :32, :32], labels)
    elif kind == "float32_labels":
        _write_raw(path, images, labels.astype(np.float32))
    elif kind == "five_labels":
        _write_raw(path, images, labels[:, :5])
    elif kind == "fewer_labels":
        _write_raw(path, images, labels[:4])
    elif kind == "indices_as_labels":
        _write_raw(path, images, rows[0][:5].astype(np.float64))
    elif kind == "columns_swapped":  # scale and orientation in each other's place
        _write_raw(path, images, labels[:, [0, 1, 2, 5, 4, 3]])
    elif kind == "nan_label":
        labels[2, 4] = np.nan
        _write_raw(path, images, labels)
    return path


@pytest.mark.parametrize("kind, fact", [
    ("missing", "does not exist"),
    ("directory", "is not a file"),
    ("empty", "is empty (0 bytes)"),
    ("garbage", "is not an HDF5 file"),
    ("truncated", "is corrupt or unreadable (OSError"),
    ("corrupt", "is corrupt or unreadable (OSError"),
    ("no_labels", "missing key(s) labels; found ['images']"),
    ("float_images", "images has dtype float32, expected uint8"),
    ("small_images", "images has shape (5, 32, 32, 3), expected (N, 64, 64, 3)"),
    ("float32_labels", "labels has dtype float32, expected float64"),
    ("five_labels", "labels has shape (5, 5), expected (N, 6)"),
    ("fewer_labels", "row counts differ: images 5, labels 4"),
    ("indices_as_labels", "is not on the published grid"),
    ("columns_swapped", "column 3 (scale) holds"),
    ("nan_label", "column 4 (shape) holds nan at row 2"),
])
def test_bad_files_raise_user_error_naming_the_problem(kind, fact, tmp_path, rows):
    path = _bad_file(kind, tmp_path, rows)
    with pytest.raises(UserError) as err:
        ds.read_rows(path, ROWS[:5])
    message = str(err.value)
    assert fact in message
    assert str(path) in message and "\n" not in message
    assert "storage.googleapis.com/3d-shapes/3dshapes.h5" in message
    assert ds.FILE_NAME in message and "data.path=''" in message


def test_off_grid_labels_name_the_grid(tmp_path, rows):
    path = _bad_file("columns_swapped", tmp_path, rows)
    with pytest.raises(UserError) as err:
        ds.read_rows(path, ROWS[:5])
    assert "not on the published grid [0.75, 0.8214," in str(err.value)
    assert ("must be factor values, not indices, in the order floor_hue, wall_hue, object_hue, "
            "scale, shape, orientation") in str(err.value)


def test_wanted_rows_absent_are_counted(small_file):
    absent = np.setdiff1d(np.arange(1000), ROWS)[:7]
    with pytest.raises(UserError) as err:
        ds.read_rows(small_file, np.concatenate([ROWS[:3], absent]))
    first = dict(zip(ds.FACTOR_NAMES, ds.classes_from_flat(absent[:1])[0].tolist()))
    assert (f"7 of the 10 requested images are not in the file (it holds 200 of the 480000 "
            f"rows), e.g. flat index {absent[0]} {first}") in str(err.value)


# ---------------------------------------------------------------- full-size files


FULL_ROWS = np.array([0, 1, 2, 3, 40, 1234, 48000, 250001, 479999])


def _full_labels(order=(0, 1, 2, 3, 4, 5)):
    """Labels of all 480,000 rows when factor order[0] is the slowest and order[5] the fastest,
    columns still in FACTOR_NAMES order."""
    sizes = np.array(ds.FACTOR_SIZES)[list(order)]
    bases = [int(np.prod(sizes[i + 1:])) for i in range(6)]
    flat = np.arange(ds.NUM_IMAGES)
    classes = np.empty((ds.NUM_IMAGES, 6), np.int64)
    for position, factor in enumerate(order):
        classes[:, factor] = flat // bases[position] % sizes[position]
    return np.stack([g[classes[:, i]] for i, g in enumerate(ds.factor_values())], axis=1)


def _write_unwritten_images(path, labels):
    """A full-size file whose images are never written (no chunk is allocated)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("images", (len(labels), 64, 64, 3), np.uint8,
                         chunks=(64, 64, 64, 3), compression="gzip")
        f.create_dataset("labels", data=labels, compression="gzip")


@pytest.fixture(scope="module")
def full_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "3dshapes.h5"
    ds.write_sparse_h5(path, FULL_ROWS, ds.render(ds.classes_from_flat(FULL_ROWS)))
    return path


def test_full_size_file_is_read_by_index_arithmetic(full_file, monkeypatch):
    assert os.path.getsize(full_file) < 5e6  # 5.9 GB of images, all but 9 rows unallocated

    def no_search(*args):
        raise AssertionError("a full-size file must not be searched through its labels")

    monkeypatch.setattr(ds, "_rows_by_labels", no_search)
    sel = []
    read_direct = h5py.Dataset.read_direct

    def counting(self, dest, source_sel=None, dest_sel=None):
        if self.name == "/images":
            sel.append(source_sel.stop - source_sel.start)
        return read_direct(self, dest, source_sel, dest_sel)

    monkeypatch.setattr(h5py.Dataset, "read_direct", counting)
    wanted = np.array([479999, 40, 2, 5, 1234, 1, 300000])
    images, classes = ds.read_rows(full_file, wanted)
    np.testing.assert_array_equal(classes, ds.classes_from_flat(np.sort(wanted)))
    written = np.isin(np.sort(wanted), FULL_ROWS)
    np.testing.assert_array_equal(images[written], ds.render(classes[written]))
    assert not images[~written].any()  # rows never written read back as zeros
    assert images[written].reshape(written.sum(), -1).max(axis=1).min() > 0
    # rows 1, 2 and 5 are read as one run (5 rows), every other row alone
    assert sorted(sel) == [1, 1, 1, 1, 5]


@pytest.mark.parametrize("order, example", [
    ((1, 0, 2, 3, 4, 5), "row 4800 holds {'floor_hue': 0.1, 'wall_hue': 0.0,"),
    ((0, 1, 2, 3, 5, 4), "row 1 holds {'floor_hue': 0.0, 'wall_hue': 0.0, 'object_hue': 0.0, "
                         "'scale': 0.75, 'shape': 1.0, 'orientation': -30.0}"),
])
def test_full_size_file_in_another_factor_order_is_refused(order, example, tmp_path):
    path = tmp_path / "3dshapes.h5"
    _write_unwritten_images(path, _full_labels(order))
    with pytest.raises(UserError) as err:
        ds.read_rows(path, [0, 1, 4800, 4801, 52800])
    message = str(err.value)
    assert "labels do not follow the published layout (row = factor indices @ (48000, 4800, " \
           "480, 60, 15, 1), orientation fastest)" in message
    assert example in message
    assert "data.path=''" in message and "\n" not in message
    _write_unwritten_images(path, _full_labels())  # the same file in the right order is read
    images, classes = ds.read_rows(path, [0, 1, 4800, 4801, 52800])
    assert not images.any() and _flat(classes).tolist() == [0, 1, 4800, 4801, 52800]


def test_more_rows_than_the_grid_are_refused(tmp_path):
    path = tmp_path / "3dshapes.h5"
    labels = _full_labels()
    _write_unwritten_images(path, np.concatenate([labels, labels[:1]]))
    with pytest.raises(UserError, match=r"has 480001 rows, expected 480000"):
        ds.read_rows(path, [0])


# ---------------------------------------------------------------- stand-in cache


def test_load_images_procedural_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache" / "shapes3d"
    wanted = np.array([479999, 5, 48000, 123456, 0])
    images, classes = ds.load_images("", wanted, cache_dir)
    files = list(cache_dir.iterdir())
    assert len(files) == 1 and files[0].name.startswith("shapes3d_procedural_v1_")
    assert files[0].suffix == ".h5"
    np.testing.assert_array_equal(classes, ds.classes_from_flat(np.sort(wanted)))
    np.testing.assert_array_equal(images, ds.render(classes))
    mtime = os.stat(files[0]).st_mtime_ns

    def no_render(classes):
        raise AssertionError("the cached rows were rendered again")
    monkeypatch.setattr(ds, "render", no_render)
    again_images, again_classes = ds.load_images("", wanted[::-1], cache_dir)
    assert list(cache_dir.iterdir()) == files and os.stat(files[0]).st_mtime_ns == mtime
    np.testing.assert_array_equal(again_images, images)
    np.testing.assert_array_equal(again_classes, classes)
    with pytest.raises(AssertionError, match="rendered again"):
        ds.load_images("", wanted[:2], cache_dir)  # another subset needs another cache file


def test_a_damaged_stand_in_cache_says_to_delete_it(tmp_path):
    ds.load_images("", [7, 8], tmp_path)
    (cache,) = tmp_path.iterdir()
    cache.write_bytes(cache.read_bytes()[:3000])
    with pytest.raises(UserError, match=f"corrupt or unreadable .*; delete {cache} and rerun to "
                                        "render it again$"):
        ds.load_images("", [8, 7], tmp_path)


def test_load_images_with_a_path_reads_that_file(small_file, rows):
    images, classes = ds.load_images(str(small_file), ROWS[10:20], "/nonexistent")
    np.testing.assert_array_equal(images, rows[1][10:20])
    np.testing.assert_array_equal(classes, rows[0][10:20])


def test_pictures_start_from_a_medium_object_that_stands_out_from_its_backgrounds():
    from types import SimpleNamespace

    from shapes3d.dataset import FACTOR_NAMES
    from shapes3d.log import showcase

    def row(floor, wall, hue, scale):
        values = {"floor_hue": floor, "wall_hue": wall, "object_hue": hue, "scale": scale,
                  "shape": 0, "orientation": 0}
        return [values[name] for name in FACTOR_NAMES]

    rows = [row(0, 0, 0, 3),  # object hue equals the backgrounds'
            row(2, 9, 1, 4),  # hue 1 step from the wall (9 -> 0 -> 1 wraps round)
            row(5, 6, 2, 0),  # far enough, but the smallest size
            row(5, 6, 2, 4)]  # the first that qualifies
    data = SimpleNamespace(classes={"test": torch.tensor(rows)},
                           space=SimpleNamespace(factor_names=FACTOR_NAMES))
    assert showcase(data) == 3
    data.classes["test"] = torch.tensor(rows[:3])
    assert showcase(data) == 0  # none qualifies: the first test image

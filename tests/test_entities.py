"""common.entities: entity ids and relation tables, built from the dSprites config."""
import copy

import numpy as np
import pytest

from common.entities import EntitySpace
from common.errors import UserError
from dsprites.config import CONFIG
from dsprites.dataset import FACTOR_NAMES, FACTOR_SIZES

BINS = CONFIG["entities"]["bins"]
RELATIONS = CONFIG["entities"]["relations"]
K = 27


def _space(bins=None, relations=None):
    return EntitySpace(FACTOR_NAMES, FACTOR_SIZES,
                       copy.deepcopy(BINS if bins is None else bins),
                       copy.deepcopy(RELATIONS if relations is None else relations))


def _rel(space, name):
    return space.table[space.relation_names.index(name)]


def _classes(shape, pos_x, pos_y, scale=2, orientation=0):
    return [0, shape, scale, orientation, pos_x, pos_y]


@pytest.fixture(scope="module")
def space():
    return _space()


# ---------------------------------------------------------------- structure


def test_dsprites_space_has_27_entities(space):
    assert space.entity_factors == ("shape", "posX", "posY")
    assert space.bin_counts == (3, 3, 3)
    assert space.num_entities == K
    assert space.relation_names == ("left", "right", "up", "down", "next_shape")
    assert space.table.shape == (5, K) and space.table.dtype == np.int64


def test_relations_are_total_functions_and_cyclic_ones_permutations(space):
    assert space.table.min() >= 0 and space.table.max() < K
    for r, rel in enumerate(RELATIONS):
        assert rel["cyclic"]
        assert sorted(space.table[r].tolist()) == list(range(K)), rel["name"]
        # no fixed points: every cyclic step of +-1 over 3 bins moves every entity
        assert (space.table[r] != np.arange(K)).all(), rel["name"]


def test_inverse_relations_compose_to_identity(space):
    ident = np.arange(K)
    left, right, up, down = (_rel(space, n) for n in ("left", "right", "up", "down"))
    np.testing.assert_array_equal(left[right], ident)
    np.testing.assert_array_equal(right[left], ident)
    np.testing.assert_array_equal(up[down], ident)
    np.testing.assert_array_equal(down[up], ident)
    nxt = _rel(space, "next_shape")
    np.testing.assert_array_equal(nxt[nxt[nxt]], ident)
    assert not np.array_equal(nxt[nxt], ident)


def test_each_relation_moves_only_its_own_factor_by_its_step(space):
    src = space.bins_of_entity(np.arange(K))
    for r, rel in enumerate(RELATIONS):
        f = space.entity_factors.index(rel["factor"])
        dst = space.bins_of_entity(space.table[r])
        others = [i for i in range(3) if i != f]
        np.testing.assert_array_equal(dst[:, others], src[:, others], err_msg=rel["name"])
        np.testing.assert_array_equal(dst[:, f], (src[:, f] + rel["step"]) % 3,
                                      err_msg=rel["name"])


def test_hand_checked_relation_targets(space):
    # id = shape * 9 + posX * 3 + posY
    e = 1 * 9 + 0 * 3 + 2  # shape 1, posX 0, posY 2 -> 11
    assert _rel(space, "left")[e] == 1 * 9 + 2 * 3 + 2  # wraps to posX 2 -> 17
    assert _rel(space, "right")[e] == 1 * 9 + 1 * 3 + 2  # 14
    assert _rel(space, "up")[e] == 1 * 9 + 0 * 3 + 1  # 10
    assert _rel(space, "down")[e] == 1 * 9 + 0 * 3 + 0  # wraps to posY 0 -> 9
    assert _rel(space, "next_shape")[e] == 2 * 9 + 0 * 3 + 2  # 20
    assert _rel(space, "next_shape")[2 * 9 + 4] == 0 * 9 + 4  # shape 2 -> 0


def test_saturating_relations_clamp_and_are_not_permutations():
    rels = [
        {"name": "left", "factor": "posX", "step": -1, "cyclic": False},
        {"name": "down", "factor": "posY", "step": 1, "cyclic": False},
        {"name": "jump", "factor": "shape", "step": 2, "cyclic": False},
        {"name": "jump_c", "factor": "shape", "step": 2, "cyclic": True},
    ]
    space = _space(relations=rels)
    src = space.bins_of_entity(np.arange(K))
    left, down, jump, jump_c = (space.bins_of_entity(space.table[r]) for r in range(4))
    np.testing.assert_array_equal(left[:, 1], np.maximum(src[:, 1] - 1, 0))
    np.testing.assert_array_equal(down[:, 2], np.minimum(src[:, 2] + 1, 2))
    np.testing.assert_array_equal(jump[:, 0], np.minimum(src[:, 0] + 2, 2))
    np.testing.assert_array_equal(jump_c[:, 0], (src[:, 0] + 2) % 3)
    for t, f in ((left, 1), (down, 2), (jump, 0)):  # other factors untouched
        others = [i for i in range(3) if i != f]
        np.testing.assert_array_equal(t[:, others], src[:, others])
    # entities at the saturated end are fixed points; the tables are not permutations
    assert space.table[0][1 * 9 + 0 * 3 + 1] == 1 * 9 + 0 * 3 + 1
    assert space.table[1][2 * 9 + 1 * 3 + 2] == 2 * 9 + 1 * 3 + 2
    for r in range(3):
        assert len(np.unique(space.table[r])) < K
    assert len(np.unique(space.table[3])) == K
    # fixed points: the 9 entities with posX bin 0 (left), posY bin 2 (down), shape 2 (jump)
    assert (space.table[0] == np.arange(K)).sum() == 9
    assert (space.table[1] == np.arange(K)).sum() == 9
    assert (space.table[2] == np.arange(K)).sum() == 9
    assert len(np.unique(space.table[0])) == 18


def test_cyclic_defaults_to_true():
    space = _space(relations=[{"name": "left", "factor": "posX", "step": -1}])
    assert sorted(space.table[0].tolist()) == list(range(K))


# ---------------------------------------------------------------- ids


def test_entity_ids_of_raw_classes(space):
    classes = np.array([
        _classes(0, 0, 0),            # first bin of everything -> 0
        _classes(1, 14, 30),          # shape 1, posX bin 1, posY bin 2 -> 9 + 3 + 2 = 14
        _classes(2, 31, 17),          # shape 2, posX bin 2, posY bin 1 -> 18 + 6 + 1 = 25
        _classes(2, 27, 27, scale=5, orientation=39),  # nuisances do not matter -> 26
        _classes(0, 4, 13),           # 0 + 0 + 1 = 1
        _classes(1, 5, 0),            # posX 5 is in no bin
        _classes(1, 0, 12),           # posY 12 is in no bin
        _classes(0, 26, 18),          # both outside
        _classes(0, 18, 26),          # both outside (other gap)
    ])
    np.testing.assert_array_equal(space.entity_ids(classes), [0, 14, 25, 26, 1, -1, -1, -1, -1])


def test_entity_ids_cover_every_entity_of_the_full_subset(space):
    edges = sorted(i for b in BINS["posX"] for i in b)
    mesh = np.meshgrid([0], [0, 1, 2], [2], [0], edges, edges, indexing="ij")
    classes = np.stack([m.ravel() for m in mesh], axis=1)
    ids = space.entity_ids(classes)
    assert (ids >= 0).all()
    np.testing.assert_array_equal(np.bincount(ids, minlength=K), np.full(K, 25))
    # mixed radix: ids agree with bins computed by hand
    bx = np.array([0] * 5 + [1] * 5 + [2] * 5)
    by = bx
    expected = classes[:, 1] * 9 + bx[np.searchsorted(edges, classes[:, 4])] * 3 \
        + by[np.searchsorted(edges, classes[:, 5])]
    np.testing.assert_array_equal(ids, expected)


def test_entity_of_bins_and_bins_of_entity_round_trip(space):
    ids = np.arange(K)
    bins = space.bins_of_entity(ids)
    assert bins.shape == (K, 3)
    np.testing.assert_array_equal(bins[14], [1, 1, 2])
    np.testing.assert_array_equal(bins[5], [0, 1, 2])
    np.testing.assert_array_equal(space.entity_of_bins(bins), ids)
    # first factor slowest
    np.testing.assert_array_equal(bins[:, 0], np.repeat([0, 1, 2], 9))
    np.testing.assert_array_equal(bins[:, 2], np.tile([0, 1, 2], 9))


def test_uneven_bins_mixed_radix():
    bins = {"shape": [[0], [1], [2]], "posX": [[0], [10], [20], [30]], "posY": [[5, 6]]}
    space = _space(bins=bins, relations=[
        {"name": "right", "factor": "posX", "step": 1, "cyclic": True}])
    assert space.bin_counts == (3, 4, 1) and space.num_entities == 12
    ids = space.entity_ids(np.array([_classes(2, 20, 6), _classes(1, 30, 5), _classes(0, 10, 7)]))
    np.testing.assert_array_equal(ids, [2 * 4 + 2, 1 * 4 + 3, -1])
    np.testing.assert_array_equal(space.entity_of_bins(space.bins_of_entity(np.arange(12))),
                                  np.arange(12))
    # right: posX bin 3 wraps to 0
    assert space.table[0][1 * 4 + 3] == 1 * 4 + 0
    assert space.entity_name(10) == "shape2-posX2-posY0"


# ---------------------------------------------------------------- errors


def test_relation_on_non_entity_factor_is_refused():
    with pytest.raises(UserError, match=r"relation 'grow'.*'scale'.*not an entity factor"):
        _space(relations=[{"name": "grow", "factor": "scale", "step": 1, "cyclic": False}])


def test_bin_index_out_of_range_is_refused():
    bins = copy.deepcopy(BINS)
    bins["posX"] = [[0, 1], [31, 32]]
    with pytest.raises(UserError, match=r"32.*posX.*0\.\.31"):
        _space(bins=bins)
    bins["posX"] = [[-1], [3]]
    with pytest.raises(UserError, match=r"-1.*posX"):
        _space(bins=bins)


def test_index_in_two_bins_is_refused():
    bins = copy.deepcopy(BINS)
    bins["posY"] = [[0, 1, 2], [2, 3]]
    with pytest.raises(UserError, match=r"index 2 .*posY.*two bins"):
        _space(bins=bins)


def test_empty_bin_is_refused():
    bins = copy.deepcopy(BINS)
    bins["shape"] = [[0], [], [2]]
    with pytest.raises(UserError, match=r"shape.*empty bin"):
        _space(bins=bins)


def test_unknown_entity_factor_is_refused():
    bins = copy.deepcopy(BINS)
    bins["colour"] = [[0]]
    with pytest.raises(UserError, match=r"'colour'.*not a factor"):
        _space(bins=bins)


def test_entity_factor_without_bins_is_refused():
    bins = copy.deepcopy(BINS)
    bins["shape"] = []
    with pytest.raises(UserError, match="shape"):
        _space(bins=bins)
    with pytest.raises(UserError, match="shape"):
        _space(bins=bins, relations=[])

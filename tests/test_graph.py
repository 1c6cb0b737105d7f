"""graph.spread: the labels of a few codes spread along the nearest-neighbour graph of all
codes (train.pseudo_source=graph), a reading that follows the data where the nearest
labelled code, or a Gaussian about it, does not."""

import copy

import numpy as np
import torch

from common import gmm, graph
from tests.scripts import module


def two_lines():
    """Two parallel lines of five codes, 1.7 apart, 0.5 between neighbours along each; one
    labelled code at the left end of line 0 and one at the right end of line 1. (Few hops:
    the spreading's weight falls by alpha = 0.2 a hop, so it reaches a few neighbours deep.)"""
    t = torch.arange(0, 2.01, 0.5)
    line0 = torch.stack([t, torch.zeros_like(t)], 1)
    line1 = torch.stack([t, torch.full_like(t, 1.7)], 1)
    labelled = torch.stack([line0[0], line1[-1]])
    z = torch.cat([line0[1:], line1[:-1]])  # the unlabelled codes: line 0's, then line 1's
    truth = torch.cat([torch.zeros(len(t) - 1), torch.ones(len(t) - 1)]).long()
    return labelled, torch.tensor([0, 1]), z, truth


def test_spread_follows_the_lines_where_the_nearest_component_does_not():
    labelled, labels, z, truth = two_lines()
    keep, classes = graph.spread(labelled, labels, z, neighbours=3, per_class=1000)
    assert keep.tolist() == list(range(len(z)))  # every code reached, sorted by position
    assert (classes == truth).all()
    # a unit Gaussian about each labelled code reads the far half of each line wrong
    nearest = gmm.assign(z, labelled, torch.eye(2).repeat(2, 1, 1))[0]
    assert (nearest == truth).float().mean() == 0.75  # (2, 0) and (0, 1.7) go to the other


def test_spread_keeps_the_surest_per_class_and_skips_a_class_nothing_reached():
    labelled, labels, z, truth = two_lines()
    # a third class whose one labelled code sits far from every other: no code spreads to it
    labelled = torch.cat([labelled, torch.tensor([[100.0, 100.0]])])
    labels = torch.tensor([0, 1, 2])
    keep, classes = graph.spread(labelled, labels, z, neighbours=3, per_class=2)
    assert classes.bincount(minlength=3).tolist() == [2, 2, 0]
    assert (classes == truth[keep]).all()
    # here every reached code is wholly its one class's: ties go to the earlier codes
    assert keep.tolist() == [0, 1, 4, 5]
    assert graph.spread(labelled, labels, z, neighbours=3, per_class=0)[0].numel() == 0


def four_entities_in_three_dims():
    """Entities 2a + b of two two-bin factors a and b, coded on dims 0 and 1 (a and b, each
    code a further 0.002 along both), dim 2 free: a nuisance. One labelled code per entity with
    the nuisance at 0; the unlabelled ones at nuisance 10 and 20, four codes each, one per
    entity, so a code's nearest three are the other entities at its own nuisance. (Few codes:
    the spreading's weight falls by alpha = 0.2 a hop, so it reaches a few neighbours deep.)"""
    entity = torch.arange(4).repeat(3)  # (12,): 4 labelled, then 8 unlabelled
    a, b = entity // 2, entity % 2
    nuisance = torch.arange(3).repeat_interleave(4) * 10.0
    codes = torch.stack([a, b, nuisance], 1).float()
    codes[:, :2] += 0.002 * torch.arange(12.0)[:, None]  # a chain in each bin, no ties
    return codes[:4], entity[:4], codes[4:], entity[4:], torch.stack([a[:4], b[:4]], 1)


def test_views_read_each_factor_from_its_own_dimensions_and_not_the_nuisance():
    labelled, labels, z, truth, bins = four_entities_in_three_dims()
    # the whole code: the nuisance chooses the neighbours, and no label leaves nuisance 0
    keep, _ = graph.spread(labelled, labels, z, neighbours=3, per_class=1000)
    assert keep.numel() == 0
    # one view per factor (a modular prior's blocks; dim 2, its free block, in none)
    views = [(slice(0, 1), torch.tensor([0, 0, 1, 1])), (slice(1, 2), torch.tensor([0, 1, 0, 1]))]
    keep, classes = graph.spread(labelled, labels, z, neighbours=3, per_class=1000, views=views)
    assert keep.tolist() == list(range(8))
    assert (classes == truth).all()
    keep, classes = graph.spread(labelled, labels, z, neighbours=3, per_class=2, views=views)
    assert classes.bincount(minlength=4).tolist() == [2, 2, 2, 2]
    assert (classes == truth[keep]).all()


def test_a_modular_prior_gives_one_view_per_factor_block_and_none_to_the_free_block():
    cfg = copy.deepcopy(module("shapes3d", "config").CONFIG)
    cfg["prior"].update(kind="modular", blocks=[3, 4, 3], free_dims=4)
    space = module("shapes3d", "dataset").entity_space(cfg)
    views = module("shapes3d", "prior").build(cfg, space).views()
    assert [v[0] for v in views] == [slice(0, 3), slice(3, 7), slice(7, 10)]
    bins = space.bins_of_entity(np.arange(space.num_entities))  # (120, 3)
    for f, (_, group) in enumerate(views):
        assert group.tolist() == bins[:, f].tolist()
    cfg["prior"].update(kind="entity", blocks=[], free_dims=0)
    (dims, group), = module("shapes3d", "prior").build(cfg, space).views()
    assert dims == slice(None) and group.tolist() == list(range(120))


def test_a_higher_alpha_reaches_further_along_a_chain():
    # twelve codes 0.5 apart along a line, one labelled code half a step before the first
    # (and one of another class far away): each step of the spreading passes on alpha of a
    # label, and it stops once little changes, so a low alpha leaves the far end unreached
    z = torch.stack([torch.arange(1, 13) * 0.5, torch.zeros(12)], 1)
    labelled, labels = torch.tensor([[0.0, 0.0], [100.0, 100.0]]), torch.tensor([0, 1])
    reached = {alpha: graph.spread(labelled, labels, z, neighbours=3, per_class=1000,
                                   alpha=alpha)[0].tolist() for alpha in (0.2, 0.9)}
    assert reached == {0.2: list(range(5)), 0.9: list(range(12))}

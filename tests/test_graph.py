"""graph.spread: the labels of a few codes spread along the nearest-neighbour graph of all
codes (train.pseudo_source=graph), a reading that follows the data where the nearest
labelled code, or a Gaussian about it, does not."""

import torch

from common import gmm, graph


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

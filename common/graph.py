"""Label spreading over the nearest-neighbour graph of codes (Zhou et al., "Learning with Local
and Global Consistency", 2004; scikit-learn's LabelSpreading): a reading of unlabelled codes
that follows the shape of the data and owes nothing to the Gaussian mixture, for the
self-training of train.pseudo_source=graph."""

import numpy as np
import torch


def spread(z_labelled, labels, z, neighbours: int, per_class: int, views=None,
           alpha: float = 0.2):
    """The labels of z_labelled (L, D) with labels (L,) in [0, K) spread over the graph that
    joins each of z_labelled and z (N, D) to its `neighbours` nearest codes; of z, for each
    class the per_class codes the spreading is surest of (highest share of that class, ties
    to the earlier code): (positions in z (P,), classes (P,)), sorted by position, on z's
    device. A class no code of z spreads to gets none.

    views: [(dims, group (K,) long)], a reading split into parts (a modular prior's blocks):
    each part spreads the groups of the labels (a factor's bins) over its own dimensions
    z[:, dims] and graph, and a class's share is the product of its groups' shares, so the
    dimensions no view names (the free block's nuisances) do not choose the neighbours, and
    a group is learnt from the labels of every class in it. None: one view, the whole code.
    alpha: the share of a code's label taken from its neighbours at each step (Zhou et al.)."""
    if views is None:
        views = [(slice(None), torch.arange(int(labels.max()) + 1))]
    num_classes = len(views[0][1])
    shares = np.ones((len(z), num_classes))
    for dims, group in views:
        group = group.cpu().numpy()
        part = _spread_one(z_labelled[:, dims], group[labels.cpu().numpy()], z[:, dims],
                           neighbours, int(group.max()) + 1, alpha)
        shares *= part[:, group]
    best = shares.argmax(1)
    keep = []
    for c in range(num_classes):
        mine = np.nonzero((best == c) & (shares[:, c] > 0))[0]
        keep.append(mine[np.argsort(-shares[mine, c], kind="stable")[:per_class]])
    keep = np.sort(np.concatenate(keep))
    return (torch.as_tensor(keep, device=z.device),
            torch.as_tensor(best[keep], dtype=torch.long, device=z.device))


def _spread_one(z_labelled, labels: np.ndarray, z, neighbours: int, num_classes: int,
                alpha: float):
    """(N, num_classes) each code of z's share of every class after the spreading; all zero
    for a code no label reached, and in the column of a class with no labelled code."""
    # imported here: scikit-learn takes seconds to load, and a run that never spreads (or a
    # command line with a typo) should not wait for it
    from sklearn.semi_supervised import LabelSpreading

    codes = torch.cat([z_labelled, z]).float().cpu().numpy()
    targets = np.concatenate([labels, np.full(len(z), -1)])
    model = LabelSpreading(kernel="knn", n_neighbors=neighbours, alpha=alpha, max_iter=100)
    with np.errstate(invalid="ignore", divide="ignore"):  # a code no label reached: all zero
        model.fit(codes, targets)
    shares = np.zeros((len(z), num_classes))
    shares[:, model.classes_] = np.nan_to_num(model.label_distributions_[len(z_labelled):])
    return shares

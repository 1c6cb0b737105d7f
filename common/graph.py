"""Label spreading over the nearest-neighbour graph of codes (Zhou et al., "Learning with Local
and Global Consistency", 2004; scikit-learn's LabelSpreading): a reading of unlabelled codes
that follows the shape of the data and owes nothing to the Gaussian mixture, for the
self-training of train.pseudo_source=graph."""

import numpy as np
import torch


def spread(z_labelled, labels, z, neighbours: int, per_class: int):
    """The labels of z_labelled (L, D) with labels (L,) spread over the graph that joins each of
    z_labelled and z (N, D) to its `neighbours` nearest codes; of z, for each class the
    per_class codes the spreading is surest of (highest share of that class in the code's
    spread label distribution, ties to the earlier code): (positions in z (P,), classes (P,)),
    sorted by position, on z's device. A class no code of z spreads to gets none."""
    # imported here: scikit-learn takes seconds to load, and a run that never spreads (or a
    # command line with a typo) should not wait for it
    from sklearn.semi_supervised import LabelSpreading

    codes = torch.cat([z_labelled, z]).float().cpu().numpy()
    targets = np.concatenate([labels.cpu().numpy(), np.full(len(z), -1)])
    model = LabelSpreading(kernel="knn", n_neighbors=neighbours, max_iter=100)
    with np.errstate(invalid="ignore", divide="ignore"):  # a code no label reached: all zero
        model.fit(codes, targets)
    shares = np.nan_to_num(model.label_distributions_[len(z_labelled):])
    best = shares.argmax(1)
    keep = []
    for c in range(shares.shape[1]):
        mine = np.nonzero((best == c) & (shares[:, c] > 0))[0]
        keep.append(mine[np.argsort(-shares[mine, c], kind="stable")[:per_class]])
    keep = np.sort(np.concatenate(keep))
    classes = model.classes_[best[keep]]
    return (torch.as_tensor(keep, device=z.device),
            torch.as_tensor(classes, dtype=torch.long, device=z.device))

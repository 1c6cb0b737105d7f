"""Weak-disentanglement metrics (README, Metrics): clustering and relation accuracy.

Codes are assigned to their most likely mixture component; a code is *accepted* at confidence q
when it lies inside that component's chi-square q-ellipsoid (common.gmm.classify).

- cluster_acc@q: accuracy among accepted codes; cluster_accept@q: fraction accepted.
- factor_acc/<factor>: fraction of codes whose most likely component has the right bin of
  that entity factor.
- rel_acc_*: fraction of moved codes whose most likely component is the relation's target,
  counting every code (not only accepted ones, so low acceptance cannot inflate it);
  rel_accept_*: fraction of moved codes accepted at q (0.99 by default).
"""

import torch

from common import gmm

QS = (0.5, 0.9, 0.99, 0.999, 1.0)


def clustering(z, labels, means, chol, qs=QS) -> dict:
    """Clustering accuracy and acceptance of encoded images at each confidence q."""
    out = {}
    pred, distance = gmm.assign(z, means, chol)
    for q in qs:
        accepted = distance <= gmm.chi2_threshold(q, means.shape[1])
        correct = (pred == labels) & accepted
        n_acc = int(accepted.sum())
        out[f"cluster_acc@{q}"] = float(correct.sum()) / n_acc if n_acc else 0.0
        out[f"cluster_accept@{q}"] = n_acc / max(len(z), 1)
    return out


def factor_accuracy(z, labels, means, chol, entity_bins, factor_names) -> dict:
    """factor_acc/<factor>: fraction of codes (all of them, most likely component, no
    acceptance) whose predicted entity has the right bin of that entity factor; entity_bins
    (K, F) the bins of each entity. Read the same way for every kind of prior, so the kinds
    compare factor by factor."""
    pred, _ = gmm.classify(z, means, chol, 1.0)
    hit = entity_bins[pred] == entity_bins[labels]  # (N, F)
    return {f"factor_acc/{name}": float(hit[:, f].float().mean()) if len(z) else 0.0
            for f, name in enumerate(factor_names)}


def _relation_scores(moved, targets, relation_ids, names, means, chol, q, suffix) -> dict:
    pred, accepted = gmm.classify(moved, means, chol, q)
    hit = (pred == targets).float()
    out = {}
    for r, name in enumerate(names):
        mask = relation_ids == r
        out[f"rel_acc_{suffix}/{name}"] = float(hit[mask].mean())
        out[f"rel_accept_{suffix}/{name}"] = float(accepted[mask].float().mean())
    out[f"rel_acc_{suffix}"] = sum(out[f"rel_acc_{suffix}/{n}"] for n in names) / len(names)
    out[f"rel_accept_{suffix}"] = sum(out[f"rel_accept_{suffix}/{n}"] for n in names) / len(names)
    return out


@torch.no_grad()
def relation_latent(rel, table, names, means, chol, per_pair: int, q: float = 0.99,
                    generator=None) -> dict:
    """Prior samples of every entity through every relation, classified.

    rel(z (N, D), relation_ids (N,)) -> moved codes; table (R, K) target entity ids.
    """
    num_rel, num_ent = table.shape
    relation_ids = torch.arange(num_rel, device=means.device).repeat_interleave(num_ent * per_pair)
    sources = torch.arange(num_ent, device=means.device).repeat_interleave(per_pair).repeat(num_rel)
    z = gmm.sample(means, chol, sources, generator=generator)
    moved = rel(z, relation_ids)
    return _relation_scores(moved, table[relation_ids, sources], relation_ids, names,
                            means, chol, q, "latent")


@torch.no_grad()
def relation_data(rel, z, labels, table, names, means, chol, q: float = 0.99) -> dict:
    """Encoded held-out images (codes z, entity labels) through every relation, classified."""
    num_rel = table.shape[0]
    relation_ids = torch.arange(num_rel, device=z.device).repeat_interleave(len(z))
    sources = labels.repeat(num_rel)
    moved = rel(z.repeat(num_rel, 1), relation_ids)
    return _relation_scores(moved, table[relation_ids, sources], relation_ids, names,
                            means, chol, q, "data")

"""Dataset-independent data plumbing: the subset's factor grid, splits, the labelled budget."""

from itertools import product

import numpy as np
import torch

from common.errors import UserError


def subset_classes(allowed: list[list[int]]) -> np.ndarray:
    """All combinations of the allowed raw indices of each factor: (N, num_factors) int64.

    Rows come in lexicographic order, which is the files' own row order (last factor fastest).
    """
    return np.array(list(product(*allowed)), dtype=np.int64).reshape(-1, len(allowed))


def split_indices(n: int, fractions: list[float], seed: int) -> dict[str, np.ndarray]:
    """Random train/val/test split of range(n), each part sorted. Same seed, same split."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(
            f"data.split must be three non-negative fractions (train, val, test) summing to 1, "
            f"got {fractions}"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    parts = np.split(order, [n_train, n_train + n_val])
    return {name: np.sort(part) for name, part in zip(("train", "val", "test"), parts)}


def labelled_subset(entity_ids: np.ndarray, per_entity: int, num_entities: int, seed: int):
    """Positions (into entity_ids) of `per_entity` randomly chosen images of every entity."""
    counts = np.bincount(entity_ids, minlength=num_entities)
    if per_entity < 1:
        raise UserError(f"data.labelled_per_entity must be >= 1, got {per_entity}")
    if counts.min() < per_entity:
        raise UserError(
            f"data.labelled_per_entity={per_entity} but entity {int(counts.argmin())} has only "
            f"{int(counts.min())} training images; lower it to at most {int(counts.min())}"
        )
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(entity_ids == e), per_entity, replace=False)
        for e in range(num_entities)
    ]
    return np.sort(np.concatenate(chosen))


def batches(n: int, batch_size: int, device, generator=None, drop_last=True):
    """Random index batches over range(n) for one epoch, made on `device`."""
    order = torch.randperm(n, device="cpu", generator=generator).to(device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return list(order[:stop].split(batch_size))

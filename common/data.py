"""Dataset-independent data plumbing: the subset's factor grid, splits, the labelled budget,
and the training view of a dataset (Data) resident on the training device."""

from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import torch

from common.entities import EntitySpace
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
    for name, part in zip(("train", "val", "test"), parts):
        if len(part) == 0:
            raise UserError(f"data.split={fractions} leaves the {name} split of these {n} images "
                            "empty; give it a larger fraction")
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


def labelled_per_bin(entity_ids: np.ndarray, entity_bins: np.ndarray, per_bin: int, seed: int):
    """Positions (into entity_ids) of a labelled set that gives every bin of every entity
    factor at least `per_bin` labelled images, with few images (data.labelled_per_bin; for
    prior.kind=modular, whose components are bins). Greedy: the next image comes from the
    entity with the most factors whose bin still lacks labels, then the largest lack summed
    over its factors, then the fewest labels its bins already have, then at random; an image
    of it not yet chosen, at random.

    entity_bins (K, F): the bin of each entity factor of every entity (EntitySpace)."""
    if per_bin < 1:
        raise UserError(f"data.labelled_per_bin must be >= 1 to count the budget per bin, got "
                        f"{per_bin}; 0 counts it per entity (data.labelled_per_entity)")
    rng = np.random.default_rng(seed)
    num_entities, num_factors = entity_bins.shape
    pools = [list(rng.permutation(np.flatnonzero(entity_ids == e))) for e in range(num_entities)]
    have = [np.zeros(entity_bins[:, f].max() + 1, np.int64) for f in range(num_factors)]
    chosen = []
    while min(part.min() for part in have) < per_bin:
        own = np.stack([have[f][entity_bins[:, f]] for f in range(num_factors)], 1)  # (K, F)
        lack = (per_bin - own).clip(min=0)
        open_ = np.array([len(pool) > 0 for pool in pools])
        # np.lexsort sorts by its last key first; the best entity comes last
        order = np.lexsort((rng.random(num_entities), -own.sum(1), lack.sum(1),
                            (lack > 0).sum(1), open_))
        entity = int(order[-1])
        if not open_[entity] or lack[entity].sum() == 0:
            f = next(f for f in range(num_factors) if have[f].min() < per_bin)
            raise UserError(f"data.labelled_per_bin={per_bin} but bin {int(have[f].argmin())} "
                            f"of entity factor {f} has only {int(have[f].min())} training "
                            "images; lower data.labelled_per_bin")
        chosen.append(pools[entity].pop())
        for f in range(num_factors):
            have[f][entity_bins[entity, f]] += 1
    return np.sort(np.array(chosen, dtype=np.int64))


def batches(n: int, batch_size: int, device, generator=None, drop_last=True):
    """Random index batches over range(n) for one epoch, made on `device`."""
    order = torch.randperm(n, device="cpu", generator=generator).to(device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return list(order[:stop].split(batch_size))


@dataclass
class Data:
    """The weak-disentanglement subset of one dataset, resident on the training device.

    images[split]: (n, 64, 64, C) uint8 as stored in the files; classes[split]: (n, F) int64
    raw factor indices; entities[split]: (n,) int64 entity ids; labelled: positions in the
    train split whose entity labels the model may use (the supervision budget).
    pixel_scale maps stored values to [0, 1] (1 for binary dSprites, 1/255 for RGB).
    """

    space: EntitySpace
    images: dict
    classes: dict
    entities: dict
    labelled: torch.Tensor
    pixel_scale: float

    @property
    def channels(self) -> int:
        return self.images["train"].shape[-1]

    def batch(self, split: str, idx):
        """Float images in [0, 1] for an index tensor or slice: (B, C, 64, 64). The stored
        (B, 64, 64, C) layout permuted is exactly channels-last, so this costs no copy."""
        return self.images[split][idx].permute(0, 3, 1, 2).float().mul_(self.pixel_scale)

    def chunks(self, split: str, size: int = 1024):
        """The whole split as float image batches of at most `size`, in order."""
        for start in range(0, len(self.images[split]), size):
            yield self.batch(split, slice(start, start + size))


def subset_flat_indices(space: EntitySpace, nuisances: dict, factor_bases) -> np.ndarray:
    """Flat file indices of every image whose entity factors fall in a bin and whose nuisance
    factors take one of the listed values (nuisances: {factor: [raw indices]})."""
    allowed = []
    for name in space.factor_names:
        if name in space.bins:
            allowed.append(sorted(i for b in space.bins[name] for i in b))
        else:
            allowed.append(sorted(nuisances[name]))
    return subset_classes(allowed) @ np.array(factor_bases, np.int64)


def to_device(images, classes, space: EntitySpace, cfg: dict, device, pixel_scale: float):
    """Split the subset, pick the labelled budget and move everything to `device`.

    images (N, 64, 64, C) uint8 and classes (N, F) in file order."""
    entities = space.entity_ids(classes)
    parts = split_indices(len(images), cfg["data"]["split"], cfg["run"]["seed"])
    train_entities = entities[parts["train"]]
    if cfg["data"]["labelled_per_bin"]:
        labelled = labelled_per_bin(train_entities,
                                    space.bins_of_entity(np.arange(space.num_entities)),
                                    cfg["data"]["labelled_per_bin"], cfg["run"]["seed"])
    else:
        labelled = labelled_subset(train_entities, cfg["data"]["labelled_per_entity"],
                                   space.num_entities, cfg["run"]["seed"])
    move = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    return Data(
        space=space,
        images={k: move(images[v]) for k, v in parts.items()},
        classes={k: move(classes[v]) for k, v in parts.items()},
        entities={k: move(entities[v]) for k, v in parts.items()},
        labelled=move(labelled),
        pixel_scale=pixel_scale,
    )


def resolve_paths(cfg: dict, repo_root: Path) -> tuple[str, Path]:
    """(data file path or '', cache folder): relative paths are from the working directory
    for the file a user names, and from the repository root for the cache."""
    cache_dir = Path(cfg["data"]["cache_dir"])
    cache_dir = cache_dir if cache_dir.is_absolute() else repo_root / cache_dir
    path = cfg["data"]["path"]
    if path and not Path(path).is_absolute():
        path = str(Path.cwd() / path)
    return path, cache_dir

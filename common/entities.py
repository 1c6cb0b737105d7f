"""Entities and relations as tables.

An entity is one combination of bins of the entity factors; its id is the mixed-radix index of
the bins (first factor slowest). A relation is a total function entity -> entity that moves one
factor's bin by `step`, cyclically or saturating at the ends; it is stored as a (R, K) table of
target entity ids, so adding a relation is a config edit, not code.
"""

from itertools import product

import numpy as np

from common.errors import UserError


class EntitySpace:
    """Entity factors, their bins, and the relation table built from a config.

    factor_names: all factor names of the dataset, in file order.
    factor_sizes: number of raw values of each factor.
    bins: {entity factor: [[raw indices of bin 0], [bin 1], ...]}, in entity-factor order.
    relations: [{"name", "factor", "step", "cyclic"}].
    """

    def __init__(self, factor_names, factor_sizes, bins: dict, relations: list):
        self.factor_names = tuple(factor_names)
        self.factor_sizes = tuple(factor_sizes)
        self.entity_factors = tuple(bins)
        self.bins = {name: [list(b) for b in bins[name]] for name in self.entity_factors}
        self._check_bins()
        self.bin_counts = tuple(len(self.bins[name]) for name in self.entity_factors)
        self.num_entities = int(np.prod(self.bin_counts))
        self.relation_names = tuple(rel["name"] for rel in relations)
        self.table = self._relation_table(relations)  # (R, K) int64
        # the entity factor each relation changes (its index in entity_factors)
        self.relation_factors = tuple(self.entity_factors.index(rel["factor"])
                                      for rel in relations)

    def _check_bins(self):
        for name, bins in self.bins.items():
            if not bins:
                raise UserError(f"entity factor '{name}' has no bins; give it at least one bin")
            if name not in self.factor_names:
                raise UserError(
                    f"entity factor '{name}' is not a factor of this dataset; "
                    f"choose from {list(self.factor_names)}"
                )
            size = self.factor_sizes[self.factor_names.index(name)]
            seen = set()
            for b in bins:
                if not b:
                    raise UserError(f"entity factor '{name}' has an empty bin; give each bin >= 1 index")
                for idx in b:
                    if not 0 <= idx < size:
                        raise UserError(
                            f"bin index {idx} of entity factor '{name}' is outside 0..{size - 1}"
                        )
                    if idx in seen:
                        raise UserError(f"index {idx} of entity factor '{name}' is in two bins")
                    seen.add(idx)

    def _relation_table(self, relations) -> np.ndarray:
        grid = np.array(list(product(*[range(n) for n in self.bin_counts])), dtype=np.int64)
        table = np.empty((len(relations), self.num_entities), dtype=np.int64)
        for r, rel in enumerate(relations):
            if rel["factor"] not in self.entity_factors:
                raise UserError(
                    f"relation '{rel['name']}' changes '{rel['factor']}', which is not an entity "
                    f"factor; choose from {list(self.entity_factors)}"
                )
            f = self.entity_factors.index(rel["factor"])
            moved = grid.copy()
            moved[:, f] = grid[:, f] + rel["step"]
            if rel.get("cyclic", True):
                moved[:, f] %= self.bin_counts[f]
            else:
                moved[:, f] = np.clip(moved[:, f], 0, self.bin_counts[f] - 1)
            table[r] = self.entity_of_bins(moved)
        return table

    def entity_of_bins(self, bin_idx: np.ndarray) -> np.ndarray:
        """(N, F_entity) bin indices -> (N,) entity ids (mixed radix, first factor slowest)."""
        ids = np.zeros(len(bin_idx), dtype=np.int64)
        for f, count in enumerate(self.bin_counts):
            ids = ids * count + bin_idx[:, f]
        return ids

    def bins_of_entity(self, ids: np.ndarray) -> np.ndarray:
        """(N,) entity ids -> (N, F_entity) bin indices."""
        ids = np.asarray(ids, dtype=np.int64).copy()
        out = np.zeros((len(ids), len(self.bin_counts)), dtype=np.int64)
        for f in reversed(range(len(self.bin_counts))):
            out[:, f] = ids % self.bin_counts[f]
            ids //= self.bin_counts[f]
        return out

    def entity_ids(self, classes: np.ndarray) -> np.ndarray:
        """(N, num_factors) raw factor indices -> (N,) entity ids, -1 where outside every bin."""
        bin_idx = np.full((len(classes), len(self.entity_factors)), -1, dtype=np.int64)
        for f, name in enumerate(self.entity_factors):
            lookup = np.full(self.factor_sizes[self.factor_names.index(name)], -1, dtype=np.int64)
            for b, members in enumerate(self.bins[name]):
                lookup[members] = b
            bin_idx[:, f] = lookup[classes[:, self.factor_names.index(name)]]
        ids = self.entity_of_bins(np.maximum(bin_idx, 0))
        ids[(bin_idx < 0).any(axis=1)] = -1
        return ids

    def entity_name(self, entity: int, labels: dict | None = None) -> str:
        """Readable name such as 'shape1-posX0-posY2' (or with `labels[factor][bin]` strings)."""
        bins = self.bins_of_entity(np.array([entity]))[0]
        parts = []
        for name, b in zip(self.entity_factors, bins):
            parts.append(labels[name][b] if labels and name in labels else f"{name}{b}")
        return "-".join(parts)

"""The pictures of a Shapes3D run: common/pictures.py's set (training curves, latent space,
traversals, relation chains, component samples, accuracy vs q), with entities named in words."""

import torch

from common import pictures

HUES = tuple(f"hue{h / 10:.1f}" for h in range(10))
SHAPES = ("cube", "cylinder", "sphere", "capsule")
SIZES = ("small", "medium", "large")


def entity_names(space) -> list[str]:
    labels = {"object_hue": list(HUES), "shape": list(SHAPES), "scale": list(SIZES)}
    usable = {k: v for k, v in labels.items()
              if k in space.bins and len(space.bins[k]) == len(v)}
    return [space.entity_name(e, usable) for e in range(space.num_entities)]


def showcase(data) -> int:
    """A test image whose object stands out, to start the traversals and relation chains from:
    a medium object (so both bigger and smaller show) whose hue is at least 3 steps round the
    colour circle from the floor's and the wall's. The first test image if none is."""
    classes, names = data.classes["test"], data.space.factor_names
    hue, floor, wall, scale = (classes[:, names.index(k)]
                               for k in ("object_hue", "floor_hue", "wall_hue", "scale"))

    def far(a, b):
        return torch.minimum((a - b) % 10, (b - a) % 10) >= 3

    hits = (far(hue, floor) & far(hue, wall) & (scale >= 3) & (scale <= 4)).nonzero()
    return int(hits[0]) if len(hits) else 0


def write_pictures(run, state, data, cfg, results) -> None:
    pictures.write_standard(run, state, data, cfg, results, entity_names(data.space),
                            source=showcase(data))

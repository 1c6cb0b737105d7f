"""The pictures of an MPI3D run: common/pictures.py's set (training curves, latent space,
traversals, relation chains, component samples, accuracy vs q), with entities named in words."""

import numpy as np

from common import pictures
from mpi3d.dataset import BACKGROUNDS, OBJECT_COLOURS

COLOURS = ("white", "green", "red", "blue", "brown", "olive")
SHAPES = ("cone", "cube", "cylinder", "hexagonal", "pyramid", "sphere")
SIZES = ("small", "large")


def entity_names(space) -> list[str]:
    labels = {"object_color": list(COLOURS), "object_shape": list(SHAPES),
              "object_size": list(SIZES)}
    usable = {k: v for k, v in labels.items()
              if k in space.bins and len(space.bins[k]) == len(v)}
    return [space.entity_name(e, usable) for e in range(space.num_entities)]


def showcase(data) -> int:
    """A test image whose object is easy to see, to start the traversals and relation chains
    from: a large object whose colour stands apart from the background (RGB distance >= 150),
    with the arm as near the middle of both axes as the test split has. The first test image
    if none is."""
    classes = data.classes["test"].cpu().numpy()
    factor = {name: classes[:, i] for i, name in enumerate(data.space.factor_names)}
    contrast = np.linalg.norm(OBJECT_COLOURS[factor["object_color"]]
                              - BACKGROUNDS[factor["background_color"]], axis=1)
    off_centre = np.abs(factor["horizontal_axis"] - 20) + np.abs(factor["vertical_axis"] - 20)
    candidates = np.flatnonzero((factor["object_size"] == 1) & (contrast >= 150))
    return int(candidates[np.argmin(off_centre[candidates])]) if len(candidates) else 0


def write_pictures(run, state, data, cfg, results) -> None:
    pictures.write_standard(run, state, data, cfg, results, entity_names(data.space),
                            source=showcase(data))

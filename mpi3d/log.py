"""The pictures of an MPI3D run: common/pictures.py's set (training curves, latent space,
traversals, relation chains, component samples, accuracy vs q), with entities named in words."""

from common import pictures

COLOURS = ("white", "green", "red", "blue", "brown", "olive")
SHAPES = ("cone", "cube", "cylinder", "hexagonal", "pyramid", "sphere")
SIZES = ("small", "large")


def entity_names(space) -> list[str]:
    labels = {"object_color": list(COLOURS), "object_shape": list(SHAPES),
              "object_size": list(SIZES)}
    usable = {k: v for k, v in labels.items()
              if k in space.bins and len(space.bins[k]) == len(v)}
    return [space.entity_name(e, usable) for e in range(space.num_entities)]


def write_pictures(run, state, data, cfg, results) -> None:
    pictures.write_standard(run, state, data, cfg, results, entity_names(data.space))

"""The pictures of a dSprites run: common/pictures.py's set (training curves, latent space,
traversals, relation chains, component samples, accuracy vs q), with entities named in words."""

from common import pictures

SHAPES = ("square", "ellipse", "heart")


def entity_names(space) -> list[str]:
    labels = {"shape": list(SHAPES), "posX": ["left", "centre", "right"],
              "posY": ["top", "middle", "bottom"]}
    usable = {k: v for k, v in labels.items()
              if k in space.bins and len(space.bins[k]) == len(v)}
    return [space.entity_name(e, usable) for e in range(space.num_entities)]


def write_pictures(run, state, data, cfg, results) -> None:
    pictures.write_standard(run, state, data, cfg, results, entity_names(data.space))

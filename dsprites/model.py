"""dSprites networks: 1-channel 64 x 64 binary images in, logits out.

The building blocks (common/networks.py) are the method's and shared; what is chosen for
dSprites is here and in config.py's `model` section: one input channel and the widths.
"""

from common.entities import EntitySpace
from common.networks import AbsAE, Decoder, Discriminator, Encoder, ReL

IMAGE_CHANNELS = 1


def build(cfg: dict, space: EntitySpace) -> tuple[AbsAE, ReL]:
    """The AbsAE and the ReL for this config's entities and relations."""
    m = cfg["model"]
    model = AbsAE(
        Encoder(IMAGE_CHANNELS, m["z_dim"], m["channels"], m["hidden"]),
        Decoder(IMAGE_CHANNELS, m["z_dim"], m["channels"], m["hidden"]),
        Discriminator(m["z_dim"], space.num_entities, m["disc_hidden"]),
    )
    return model, ReL(m["z_dim"], len(space.relation_names), m["rel_hidden"])

"""dSprites networks: 1-channel 64 x 64 binary images in, logits out.

The networks are the method's (common/networks.py: conv encoder and decoder, latent
discriminator, ReL); their sizes are config.py's `model` section. To try another architecture
on dSprites alone, build it here.
"""

from common import networks

IMAGE_CHANNELS = 1


def build(cfg: dict, space):
    """(AbsAE, ReL) for this config's entities and relations."""
    return networks.build(cfg, space, IMAGE_CHANNELS)

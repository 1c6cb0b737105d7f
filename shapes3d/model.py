"""Shapes3D networks: 3-channel 64 x 64 colour images in, logits out.

The networks are the method's (common/networks.py: conv encoder and decoder, latent
discriminator, ReL); their sizes are config.py's `model` section. To try another architecture
on Shapes3D alone, build it here.
"""

from common import networks

IMAGE_CHANNELS = 3


def build(cfg: dict, space):
    """(AbsAE, ReL) for this config's entities and relations."""
    return networks.build(cfg, space, IMAGE_CHANNELS)

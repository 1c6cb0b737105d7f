"""Shapes3D losses. The reconstruction loss is the Bernoulli likelihood of each colour intensity
in [0, 1] (binary cross-entropy, as disentanglement_lib uses for every dataset): floor and wall
fill most of the picture, and under a squared error the decoder can nearly ignore the object
whose hue, size and shape are the entity. The adversarial, supervised and relational terms are
the method's own (common/losses.py)."""

from common.losses import bernoulli_reconstruction as reconstruction

__all__ = ["reconstruction"]

"""dSprites losses. Pixels are binary, so the reconstruction loss is their exact Bernoulli
likelihood; the adversarial, supervised and relational terms are the method's own
(common/losses.py)."""

from common.losses import bernoulli_reconstruction as reconstruction

__all__ = ["reconstruction"]

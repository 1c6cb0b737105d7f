"""MPI3D losses. The reconstruction loss is the Bernoulli likelihood of each colour intensity
in [0, 1] (binary cross-entropy, as disentanglement_lib uses for every dataset): the small
object is a few hundred pixels on a flat background, and a squared error would let the decoder
paint the background and blur the object away. The adversarial, supervised and relational
terms are the method's own (common/losses.py)."""

from common.losses import bernoulli_reconstruction as reconstruction

__all__ = ["reconstruction"]

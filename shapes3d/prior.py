"""Shapes3D priors: the warm-up prior and the adaptive Gaussian mixture of the method
(common/mixture.py), set by config.py's `prior` section. To try another prior on dSprites
alone, define build/warmup here."""

from common.mixture import build, warmup

__all__ = ["build", "warmup"]

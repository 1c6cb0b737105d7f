"""dSprites priors: config.py's `prior` section picks the warm-up prior and the mixture's
settings; the maths is the method's own (common/mixture.py, common/gmm.py)."""

from common.entities import EntitySpace
from common.mixture import MixturePrior, sample_warmup


def build(cfg: dict, space: EntitySpace) -> MixturePrior:
    """One component per entity; means learnt when prior.learn_means is set."""
    return MixturePrior(space.num_entities, cfg["model"]["z_dim"], cfg["prior"]["learn_means"])


def warmup(cfg: dict, n: int, device):
    """n samples of the phase-1 prior (prior.warmup: normal | uniform)."""
    return sample_warmup(cfg["prior"]["warmup"], n, cfg["model"]["z_dim"], device)

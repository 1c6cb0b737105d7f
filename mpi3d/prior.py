"""MPI3D priors: the simple prior of the warm-up (phase 1) and the adaptive Gaussian
mixture, one component per entity (phases 2-3). The density maths is common/gmm.py."""

import torch
from torch import nn

from common import gmm


def warmup_sample(cfg: dict, n: int, device):
    """n samples of the phase-1 prior (prior.warmup): standard normal or uniform on [-1, 1]."""
    z_dim = cfg["model"]["z_dim"]
    if cfg["prior"]["warmup"] == "uniform":
        return torch.rand(n, z_dim, device=device) * 2 - 1
    return torch.randn(n, z_dim, device=device)


class MixturePrior(nn.Module):
    """One Gaussian component per entity, uniform weights.

    Means start at each entity's mean labelled code (fit); they are trained by the relational
    loss when learn_means is set. Covariances stay fixed after fit.
    """

    def __init__(self, num_entities: int, z_dim: int, learn_means: bool):
        super().__init__()
        self.means = nn.Parameter(torch.zeros(num_entities, z_dim), requires_grad=learn_means)
        self.register_buffer("chol", torch.eye(z_dim).repeat(num_entities, 1, 1))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, z, labels, cov_scale: float, pooling: float = 0.0):
        """Adaptive prior init (phase 2): components from the encoded labelled set."""
        means, chol = gmm.fit_components(z, labels, self.means.shape[0], cov_scale,
                                         pooling=pooling)
        self.means.copy_(means)
        self.chol.copy_(chol)
        self.fitted.fill_(True)

    def sample(self, components, eps=None, generator=None):
        """One code per entry of components (N,) long; differentiable in the means."""
        return gmm.sample(self.means, self.chol, components, generator=generator, eps=eps)

    def whiten(self, z, components):
        """The noise that places each code where it is in its component: sample's inverse."""
        offset = (z - self.means[components].detach())[..., None]
        return torch.linalg.solve_triangular(self.chol[components], offset, upper=False)[..., 0]

    def sample_uniform(self, n: int):
        """n codes from the whole mixture, with their components."""
        components = torch.randint(0, self.means.shape[0], (n,), device=self.means.device)
        return self.sample(components), components

    def classify(self, z, q: float):
        """(most likely component (N,), accepted at confidence q (N,) bool)."""
        return gmm.classify(z, self.means, self.chol, q)

    def min_separation(self) -> float:
        return gmm.min_pairwise_mahalanobis(self.means.detach(), self.chol)


def build(cfg: dict, space) -> MixturePrior:
    """One component per entity; means learnt when prior.learn_means is set."""
    return MixturePrior(space.num_entities, cfg["model"]["z_dim"], cfg["prior"]["learn_means"])

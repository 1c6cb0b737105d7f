"""MPI3D priors: the simple prior of the warm-up (phase 1) and the adaptive Gaussian
mixture of phases 2-3, of one of two kinds (prior.kind):

- entity: one component per entity (the paper's);
- modular: the code is split into one block per entity factor, each block has its own mixture
  with one component per bin of that factor, and an entity's component is the product of its
  bins' components (Valenti & Bacciu's modular follow-up). A labelled image labels every block
  at once, so each bin's component is fitted from the labelled codes of every entity that
  shares the bin. Optionally a free block closes the code (prior.free_dims): one component
  that every entity shares, which no relation moves, room for what varies inside an entity.

Both expose one component per entity (means (K, D), chol (K, D, D)), so the losses, ReL and
every metric read them alike. The density maths is common/gmm.py."""

import numpy as np
import torch
from torch import nn

from common import gmm


def warmup_sample(cfg: dict, n: int, device):
    """n samples of the phase-1 prior (prior.warmup): standard normal or uniform on [-1, 1]."""
    z_dim = cfg["model"]["z_dim"]
    if cfg["prior"]["warmup"] == "uniform":
        return torch.rand(n, z_dim, device=device) * 2 - 1
    return torch.randn(n, z_dim, device=device)


class Mixture(nn.Module):
    """What both kinds share: uniform weights over K entity components (self.means (K, D),
    self.chol (K, D, D)), sampling, whitening, classification."""

    def sample(self, components, eps=None, generator=None):
        """One code per entry of components (N,) long; differentiable in the means."""
        return gmm.sample(self.means, self.chol, components, generator=generator, eps=eps)

    def whiten(self, z, components):
        """The noise that places each code where it is in its component: sample's inverse."""
        return gmm.whiten(z - self.means[components].detach(), self.chol[components])

    def sample_uniform(self, n: int):
        """n codes from the whole mixture, with their components."""
        components = torch.randint(0, self.means.shape[0], (n,), device=self.means.device)
        return self.sample(components), components

    def classify(self, z, q: float):
        """(most likely component (N,), accepted at confidence q (N,) bool)."""
        return gmm.classify(z, self.means, self.chol, q)

    def min_separation(self) -> float:
        return gmm.min_pairwise_mahalanobis(self.means.detach(), self.chol)


class MixturePrior(Mixture):
    """prior.kind = entity: one Gaussian component per entity.

    Means start at each entity's mean labelled code (fit); they are trained by the relational
    loss when learn_means is set. Covariances stay as fitted until a refit (prior.refit_every).
    """

    def __init__(self, num_entities: int, z_dim: int, learn_means: bool):
        super().__init__()
        self.means = nn.Parameter(torch.zeros(num_entities, z_dim), requires_grad=learn_means)
        self.register_buffer("chol", torch.eye(z_dim).repeat(num_entities, 1, 1))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, z, labels, cov_scale: float, pooling: float = 0.0, keep_means: bool = False):
        """Adaptive prior init (phase 2): components from the encoded labelled set; with
        keep_means, the covariances alone (prior.refit_every), the learnt means kept."""
        means, chol = gmm.fit_components(z, labels, self.means.shape[0], cov_scale,
                                         pooling=pooling)
        if not keep_means:
            self.means.copy_(means)
        self.chol.copy_(chol)
        self.fitted.fill_(True)

    @torch.no_grad()
    def calibrate(self, z, labels):
        """The covariances fitted to codes z (N, D) with components labels (N,) about the
        learnt means (prior.calibrate_epochs); the means kept."""
        self.chol.copy_(gmm.covariances_about(z, labels, self.means.detach()))

    def relation_changes(self, space):
        """Which code dimensions each relation may change: all of them (None)."""
        return None

    def views(self) -> list:
        """[(dims, group of each entity (K,))]: one view, the whole code, telling every entity
        apart (graph.spread, train.pseudo_source=graph)."""
        return [(slice(None), torch.arange(self.means.shape[0], device=self.means.device))]


class ModularPrior(Mixture):
    """prior.kind = modular: block f of the code (block_dims[f] dimensions) has one component
    per bin of entity factor f; entity k's component is the product of the components of its
    bins entity_bins[k], so its mean is their means side by side and its covariance is
    block-diagonal. Block means are trained like the entity kind's means; block covariances
    stay as fitted until a refit (prior.refit_every)."""

    def __init__(self, entity_bins, bin_counts, block_dims, learn_means: bool):
        super().__init__()
        self.block_dims = tuple(int(d) for d in block_dims)
        self.block_means = nn.ParameterList(
            nn.Parameter(torch.zeros(n, d), requires_grad=learn_means)
            for n, d in zip(bin_counts, self.block_dims))
        for f, (n, d) in enumerate(zip(bin_counts, self.block_dims)):
            self.register_buffer(f"block_chol{f}", torch.eye(d).repeat(n, 1, 1))
        # (K, F) the bin of every entity factor of each entity: set by the entity table
        self.register_buffer("entity_bins", torch.as_tensor(entity_bins, dtype=torch.long),
                             persistent=False)
        self.register_buffer("fitted", torch.tensor(False))

    def block_chols(self) -> list:
        return [getattr(self, f"block_chol{f}") for f in range(len(self.block_dims))]

    @property
    def means(self):
        """(K, D) every entity's mean: its bins' block means side by side."""
        return torch.cat([m[self.entity_bins[:, f]] for f, m in enumerate(self.block_means)], 1)

    @property
    def chol(self):
        """(K, D, D) every entity's block-diagonal Cholesky factor."""
        k, d = self.entity_bins.shape[0], sum(self.block_dims)
        chol = self.block_chol0.new_zeros(k, d, d)
        start = 0
        for f, block in enumerate(self.block_chols()):
            end = start + self.block_dims[f]
            chol[:, start:end, start:end] = block[self.entity_bins[:, f]]
            start = end
        return chol

    def blocks(self, z):
        """z (N, D) split into its blocks, one per entity factor."""
        return z.split(self.block_dims, dim=-1)

    @torch.no_grad()
    def fit(self, z, labels, cov_scale: float, pooling: float = 0.0, keep_means: bool = False):
        """Adaptive prior init (phase 2): each block's bin components from the blocks of the
        encoded labelled codes, every labelled code counting for the bins of its entity; with
        keep_means, the covariances alone (prior.refit_every), the learnt means kept."""
        bins = self.entity_bins[labels]  # (N, F)
        for f, (part, chol) in enumerate(zip(self.blocks(z), self.block_chols())):
            means, fitted = gmm.fit_components(part, bins[:, f], chol.shape[0], cov_scale,
                                               pooling=pooling)
            if not keep_means:
                self.block_means[f].copy_(means)
            chol.copy_(fitted)
        self.fitted.fill_(True)

    @torch.no_grad()
    def calibrate(self, z, labels):
        """Each block's bin covariances fitted to the blocks of codes z (N, D) with entity
        labels (N,), about the learnt block means (prior.calibrate_epochs); the means kept."""
        bins = self.entity_bins[labels]  # (N, F)
        for f, (part, chol) in enumerate(zip(self.blocks(z), self.block_chols())):
            chol.copy_(gmm.covariances_about(part, bins[:, f], self.block_means[f].detach()))

    def views(self) -> list:
        """[(dims, bin of each entity (K,))]: one view per block of more than one bin, its
        dimensions and its factor's bins (graph.spread, train.pseudo_source=graph): a bin is
        read from its block alone, and the free block, which tells no entity apart, from
        none."""
        starts = np.cumsum([0, *self.block_dims])
        return [(slice(int(starts[f]), int(starts[f + 1])), self.entity_bins[:, f])
                for f, chol in enumerate(self.block_chols()) if chol.shape[0] > 1]

    def relation_changes(self, space) -> torch.Tensor:
        """(R, D) bool: a relation changes only the block of the entity factor it moves."""
        block_of_dim = torch.repeat_interleave(torch.arange(len(self.block_dims)),
                                               torch.tensor(self.block_dims))
        return block_of_dim[None, :] == torch.tensor(space.relation_factors)[:, None]


def block_dims(z_dim: int, num_factors: int, blocks: list) -> list:
    """prior.blocks, or (empty) z_dim split as evenly as it goes, the first blocks the wider."""
    if blocks:
        return list(blocks)
    return [z_dim // num_factors + (f < z_dim % num_factors) for f in range(num_factors)]


def build(cfg: dict, space) -> Mixture:
    """The mixture prior.kind names; means learnt when prior.learn_means is set. The modular
    kind's free block (prior.free_dims) is a block of one bin that every entity shares: no
    relation moves it, as no relation names its factor."""
    z_dim, learn = cfg["model"]["z_dim"], cfg["prior"]["learn_means"]
    if cfg["prior"]["kind"] == "modular":
        entity_bins = space.bins_of_entity(np.arange(space.num_entities))
        free = cfg["prior"]["free_dims"]
        dims = block_dims(z_dim - free, len(space.bin_counts), cfg["prior"]["blocks"])
        bin_counts = list(space.bin_counts)
        if free:
            entity_bins = np.concatenate([entity_bins, np.zeros((len(entity_bins), 1), int)], 1)
            bin_counts, dims = bin_counts + [1], dims + [free]
        return ModularPrior(entity_bins, bin_counts, dims, learn)
    return MixturePrior(space.num_entities, z_dim, learn)

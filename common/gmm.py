"""Gaussian-mixture maths, batched over samples and components.

A mixture with K components in D dimensions is given by `means` (K, D) and lower-triangular
Cholesky factors `chol` (K, D, D) of the covariances (Sigma_k = L_k L_k^T); weights are uniform,
one component per entity. Nothing here loops over samples in Python.
"""

import math

import torch
from scipy.stats import chi2

from common.errors import UserError


def chi2_threshold(q: float, dim: int) -> float:
    """Squared-Mahalanobis radius holding a fraction q of a D-dim Gaussian (inf for q = 1)."""
    if not 0.0 < q <= 1.0:
        raise UserError(f"confidence q must be in (0, 1], got {q}")
    return math.inf if q >= 1.0 else float(chi2.ppf(q, dim))


def sample(means, chol, components, generator=None, eps=None):
    """One sample per entry of `components` (N,) long -> (N, D), differentiable in means/chol.

    eps (N, D): the standard-normal noise to use, when the caller drew it already.
    """
    if eps is None:
        eps = torch.randn(components.shape[0], means.shape[1], device=means.device,
                          dtype=means.dtype, generator=generator)
    return means[components] + (chol[components] @ eps[..., None]).squeeze(-1)


def whiten(offset, chol):
    """The standard-normal noise that places offsets (N, D) from their components' means where
    they are, L^-1 offset, with chol (N, D, D) each row's Cholesky factor: sample's inverse."""
    return torch.linalg.solve_triangular(chol, offset[..., None], upper=False)[..., 0]


def principal_axes(chol):
    """Each component's principal axes, widest first: (standard deviations (K, D), unit axes
    (K, D, D) with axis j in column j) of Sigma_k = L_k L_k^T."""
    variances, axes = torch.linalg.eigh(chol @ chol.transpose(-1, -2))  # ascending
    return variances.flip(-1).clamp_min(0).sqrt(), axes.flip(-1)


def mahalanobis_sq(z, means, chol, chunk: int = 8192):
    """Squared Mahalanobis distance of every code to every component: (N, D) -> (N, K)."""
    eye = torch.eye(means.shape[1], device=means.device, dtype=means.dtype)
    chol_inv = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)  # (K, D, D)
    out = []
    for part in z.split(chunk):
        diff = part[:, None, :] - means[None]  # (n, K, D)
        white = torch.einsum("kij,nkj->nki", chol_inv, diff)
        out.append(white.pow(2).sum(-1))
    return torch.cat(out) if out else z.new_zeros(0, means.shape[0])


def log_det(chol):
    """log |Sigma_k| for each component: (K,)."""
    return 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)


def component_log_prob(z, means, chol):
    """log N(z | mu_k, Sigma_k) for every code and component: (N, D) -> (N, K)."""
    dim = means.shape[1]
    return -0.5 * (mahalanobis_sq(z, means, chol) + log_det(chol)[None] + dim * math.log(2 * math.pi))


def mixture_log_prob(z, means, chol):
    """log density of the uniform mixture: (N, D) -> (N,)."""
    return torch.logsumexp(component_log_prob(z, means, chol), dim=1) - math.log(means.shape[0])


def _scores(z, means, chol):
    """(squared Mahalanobis distances (N, K), log densities (N, K) up to their shared
    constant) of every code under every component."""
    maha = mahalanobis_sq(z, means, chol)
    return maha, -0.5 * (maha + log_det(chol)[None])


def assign(z, means, chol):
    """Most likely component of each code and the code's squared Mahalanobis distance to it:
    (component (N,) long, distance (N,)). Whether a code is accepted at any q follows from the
    distance (classify), so one assignment serves every q."""
    maha, logp = _scores(z, means, chol)
    component = logp.argmax(dim=1)
    return component, maha.gather(1, component[:, None]).squeeze(1)


def classify(z, means, chol, q: float):
    """Most likely component of each code, and whether it lies inside that component's q-ellipsoid.

    Returns (component (N,) long, accepted (N,) bool). A code is accepted when its squared
    Mahalanobis distance to its assigned component is at most chi2_D(q), so q means the same at
    every latent size and scale.
    """
    component, distance = assign(z, means, chol)
    return component, distance <= chi2_threshold(q, means.shape[1])


def surest(z, means, chol, q: float, k: int):
    """The codes the mixture is surest of: for each component, up to k of the codes assigned to
    it that lie inside its q-ellipsoid, those most likely under it against any other first.
    Returns (positions in z (P,) long, their components (P,)), grouped by component."""
    maha, logp = _scores(z, means, chol)
    # sureness: log-odds of the code's component against the runner-up (the posterior itself
    # rounds to 1 for every code far from the others)
    top = logp.topk(2, dim=1)
    confidence, component = top.values[:, 0] - top.values[:, 1], top.indices[:, 0]
    accepted = maha.gather(1, component[:, None]).squeeze(1) <= chi2_threshold(q, means.shape[1])
    confidence = confidence.masked_fill(~accepted, -math.inf)  # ranked after every accepted
    order = torch.argsort(confidence, descending=True, stable=True)
    order = order[torch.argsort(component[order], stable=True)]  # by component, surest first
    grouped = component[order]
    rank = torch.arange(len(order), device=z.device) - torch.searchsorted(grouped, grouped)
    keep = order[(rank < k) & accepted[order]]
    return keep, component[keep]


def fit_components(z, labels, num_components: int, cov_scale: float, shrinkage: float = 0.1,
                   pooling: float = 0.0):
    """Mean and scaled, regularised covariance of the codes of each component.

    z (N, D), labels (N,) in [0, K). Sigma_k = cov_scale * ((1 - s) S_k + s * tr(S_k)/D * I):
    shrinking towards a scaled identity keeps Sigma_k positive definite even with fewer labelled
    codes than dimensions. A component with a single code has no sample covariance; it takes
    the pooled covariance of the components that have one or, when every component has a single
    code (one label per entity), the covariance of all codes shrunk by K^(-2/D): K such
    components together fill about the volume the codes fill. Returns (means (K, D),
    chol (K, D, D)).

    pooling p in [0, 1] blends each S_k with the pooled within-component covariance before the
    shrinkage above: S_k <- (1 - p) S_k + p S_pooled (regularised discriminant analysis). With
    few labels per entity S_k is noisy and too thin, while the pooled estimate uses them all.
    """
    counts = torch.bincount(labels, minlength=num_components)
    if (counts < 1).any():
        missing = torch.nonzero(counts < 1).flatten().tolist()
        raise UserError(
            f"components {missing[:5]} have no labelled code; raise data.labelled_per_entity"
        )
    if len(z) < 2:
        raise UserError("at least 2 labelled codes are needed to fit the mixture; "
                        "raise data.labelled_per_entity")
    dim = z.shape[1]
    onehot = torch.nn.functional.one_hot(labels, num_components).to(z.dtype)  # (N, K)
    means = (onehot.T @ z) / counts[:, None]
    diff = z[:, None, :] - means[None]  # (N, K, D)
    weighted = diff * onehot[:, :, None]
    cov = torch.einsum("nki,nkj->kij", weighted, diff) / (counts[:, None, None] - 1).clamp_min(1)
    single = counts < 2
    if single.any():
        if single.all():
            cov[:] = torch.cov(z.T).reshape(dim, dim) * num_components ** (-2 / dim)
        else:
            cov[single] = cov[~single].mean(0)
    if pooling > 0:
        weights = (counts - 1).clamp_min(0).to(z.dtype)  # degrees of freedom of each S_k
        if weights.sum() == 0:  # one code each: every S_k is already the same fallback
            weights = torch.ones_like(weights)
        pooled = torch.einsum("k,kij->ij", weights / weights.sum(), cov)
        cov = (1 - pooling) * cov + pooling * pooled
    trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)
    eye = torch.eye(dim, device=z.device, dtype=z.dtype)
    cov = (1 - shrinkage) * cov + shrinkage * (trace / dim)[:, None, None] * eye
    cov = cov_scale * cov + 1e-6 * eye
    return means, torch.linalg.cholesky(cov)


def covariances_about(z, labels, means, shrinkage: float = 0.1, chunk: int = 4096):
    """Cholesky factors (K, D, D) of each component's covariance about the given means (K, D):
    Sigma_k = mean over the codes labelled k of (z - mu_k)(z - mu_k)^T, the maximum-likelihood
    covariance of a component whose mean is fixed (the M-step of EM with learnt means). A
    component with fewer than two codes takes the pooled covariance of the others; each is
    shrunk towards a scaled identity as in fit_components. Computed in float64."""
    num_components, dim = means.shape
    counts = torch.bincount(labels, minlength=num_components)
    if (counts < 2).all():
        raise UserError("at least one component needs two codes to estimate its covariance")
    cov = torch.zeros(num_components, dim, dim, dtype=torch.float64, device=z.device)
    for part, part_labels in zip(z.split(chunk), labels.split(chunk)):
        diff = (part - means[part_labels]).double()  # (n, D)
        cov.index_add_(0, part_labels, diff[:, :, None] * diff[:, None, :])
    few = counts < 2
    pooled = cov[~few].sum(0) / counts[~few].sum()
    cov = cov / counts.clamp_min(1)[:, None, None].double()
    cov[few] = pooled
    trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)
    eye = torch.eye(dim, dtype=torch.float64, device=z.device)
    cov = (1 - shrinkage) * cov + shrinkage * (trace / dim)[:, None, None] * eye + 1e-6 * eye
    return torch.linalg.cholesky(cov).to(z.dtype)


def min_pairwise_mahalanobis(means, chol) -> float:
    """Smallest Mahalanobis distance from any component's mean to another's (collapse guard)."""
    maha = mahalanobis_sq(means, means, chol)  # [i, k]: mean i under component k
    maha.fill_diagonal_(math.inf)
    return float(maha.min().sqrt())

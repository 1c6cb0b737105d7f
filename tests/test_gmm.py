"""common.gmm: mixture maths checked against torch.distributions, scipy and known moments."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from common import gmm
from common.errors import UserError

D64 = torch.float64


def _random_mixture(k=5, d=4, seed=0, spread=3.0):
    """Means (K, D) and Cholesky factors (K, D, D) of random SPD covariances (float64)."""
    g = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(k, d, generator=g, dtype=D64)
    a = torch.randn(k, d, d, generator=g, dtype=D64)
    cov = a @ a.transpose(-1, -2) / d + 0.5 * torch.eye(d, dtype=D64)
    return means, torch.linalg.cholesky(cov)


def _separated_mixture(k, d, gap=50.0, seed=0):
    """Components whose means are `gap` apart along the first axis, unit-ish covariances."""
    _, chol = _random_mixture(k, d, seed=seed)
    means = torch.zeros(k, d, dtype=D64)
    means[:, 0] = gap * torch.arange(k, dtype=D64)
    return means, chol


# ---------------------------------------------------------------- densities


def test_component_log_prob_matches_multivariate_normal():
    means, chol = _random_mixture(5, 4, seed=1)
    z = 3.0 * torch.randn(300, 4, generator=torch.Generator().manual_seed(2), dtype=D64)
    got = gmm.component_log_prob(z, means, chol)
    assert got.shape == (300, 5)
    for k in range(5):
        ref = torch.distributions.MultivariateNormal(means[k], scale_tril=chol[k]).log_prob(z)
        torch.testing.assert_close(got[:, k], ref, rtol=1e-10, atol=1e-10)


def test_mixture_log_prob_matches_mixture_same_family():
    means, chol = _random_mixture(5, 4, seed=3)
    z = 3.0 * torch.randn(300, 4, generator=torch.Generator().manual_seed(4), dtype=D64)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=torch.full((5,), 0.2, dtype=D64)),
        torch.distributions.MultivariateNormal(means, scale_tril=chol),
    )
    got = gmm.mixture_log_prob(z, means, chol)
    assert got.shape == (300,)
    torch.testing.assert_close(got, mix.log_prob(z), rtol=1e-10, atol=1e-10)


def test_mahalanobis_sq_equals_explicit_quadratic_form():
    means, chol = _random_mixture(5, 4, seed=5)
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(6), dtype=D64)
    cov_inv = torch.linalg.inv(chol @ chol.transpose(-1, -2))
    diff = z[:, None, :] - means[None]  # (N, K, D)
    expected = torch.einsum("nki,kij,nkj->nk", diff, cov_inv, diff)
    torch.testing.assert_close(gmm.mahalanobis_sq(z, means, chol), expected, rtol=1e-9, atol=1e-9)
    # the chunked path gives the same answer
    torch.testing.assert_close(gmm.mahalanobis_sq(z, means, chol, chunk=7), expected,
                               rtol=1e-9, atol=1e-9)


def test_log_det_matches_slogdet():
    means, chol = _random_mixture(5, 4, seed=7)
    _, ref = torch.linalg.slogdet(chol @ chol.transpose(-1, -2))
    torch.testing.assert_close(gmm.log_det(chol), ref)


# ---------------------------------------------------------------- sampling


def test_sample_moments_match_means_and_covariances():
    k, d, n = 5, 4, 200_000
    means, chol = _random_mixture(k, d, seed=8)
    comps = torch.arange(k).repeat_interleave(n)
    z = gmm.sample(means, chol, comps, generator=torch.Generator().manual_seed(9))
    assert z.shape == (k * n, d) and z.dtype == D64
    cov = chol @ chol.transpose(-1, -2)
    for c in range(k):
        zc = z[comps == c]
        sd = cov[c].diagonal().sqrt()
        # sample mean: standard error sd / sqrt(n); allow 5 of them
        assert ((zc.mean(0) - means[c]).abs() <= 5 * sd / math.sqrt(n)).all()
        emp = torch.cov(zc.T)
        # entry (i, j) has standard error sqrt((S_ii S_jj + S_ij^2) / n); allow 6 of them
        se = ((cov[c].diagonal()[:, None] * cov[c].diagonal()[None] + cov[c] ** 2) / n).sqrt()
        assert ((emp - cov[c]).abs() <= 6 * se).all(), (c, emp, cov[c])


def test_sample_respects_component_ids():
    means, chol = _separated_mixture(6, 3, gap=100.0)
    comps = torch.randint(0, 6, (5000,), generator=torch.Generator().manual_seed(0))
    z = gmm.sample(means, chol, comps, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(z, means).argmin(1)
    assert torch.equal(nearest, comps)


def test_sample_is_differentiable_in_means_and_chol():
    means, chol = _random_mixture(4, 3, seed=10)
    means.requires_grad_(True)
    chol.requires_grad_(True)
    comps = torch.tensor([0, 0, 2, 3, 3, 3])
    z = gmm.sample(means, chol, comps, generator=torch.Generator().manual_seed(0))
    z.sum().backward()
    # d(sum z)/d(mean_k) = number of samples from component k, in every coordinate
    expected = torch.tensor([2.0, 0.0, 1.0, 3.0], dtype=D64)[:, None].expand(4, 3)
    torch.testing.assert_close(means.grad, expected)
    assert chol.grad is not None and chol.grad[1].abs().sum() == 0
    assert chol.grad[0].abs().sum() > 0


# ---------------------------------------------------------------- chi-square acceptance


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("dim", [1, 2, 10, 64])
def test_chi2_threshold_matches_scipy(q, dim):
    assert gmm.chi2_threshold(q, dim) == pytest.approx(chi2.ppf(q, dim), rel=1e-12)


def test_chi2_threshold_known_values_and_edges():
    assert gmm.chi2_threshold(0.95, 1) == pytest.approx(1.959964 ** 2, rel=1e-5)
    assert gmm.chi2_threshold(0.5, 2) == pytest.approx(2 * math.log(2), rel=1e-9)
    assert gmm.chi2_threshold(1.0, 3) == math.inf
    for bad in (0.0, -0.1, 1.0001, 2.0):
        with pytest.raises(UserError, match="confidence q"):
            gmm.chi2_threshold(bad, 3)


@pytest.mark.parametrize("dim", [2, 10])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_acceptance_frequency_is_q(dim, q):
    n = 100_000
    means, chol = _random_mixture(1, dim, seed=dim)
    z = gmm.sample(means, chol, torch.zeros(n, dtype=torch.long),
                   generator=torch.Generator().manual_seed(int(100 * q)))
    pred, accepted = gmm.classify(z, means, chol, q)
    assert (pred == 0).all()
    assert float(accepted.double().mean()) == pytest.approx(q, abs=0.01)


# ---------------------------------------------------------------- classify


def test_classify_recovers_source_component_when_separated():
    means, chol = _separated_mixture(8, 5, gap=40.0, seed=2)
    comps = torch.randint(0, 8, (4000,), generator=torch.Generator().manual_seed(0))
    z = gmm.sample(means, chol, comps, generator=torch.Generator().manual_seed(1))
    pred, accepted = gmm.classify(z, means, chol, 0.99)
    assert pred.dtype == torch.long and accepted.dtype == torch.bool
    assert torch.equal(pred, comps)
    assert float(accepted.double().mean()) == pytest.approx(0.99, abs=0.01)


def test_classify_uses_covariance_not_euclidean_distance():
    # code at x=2: Euclidean-closer to component 0 (tight, at 0) than component 1 (broad, at 5),
    # but far more likely under the broad one.
    means = torch.tensor([[0.0, 0.0], [5.0, 0.0]], dtype=D64)
    chol = torch.stack([0.1 * torch.eye(2, dtype=D64), 3.0 * torch.eye(2, dtype=D64)])
    pred, accepted = gmm.classify(torch.tensor([[2.0, 0.0]], dtype=D64), means, chol, 0.99)
    assert pred.tolist() == [1] and accepted.tolist() == [True]


def test_classify_uses_likelihood_not_mahalanobis_alone():
    # same mean, Sigma_0 = I, Sigma_1 = 100 I (log|Sigma_1| = 2 ln 100 = 9.21).
    # z = (3, 0): maha 9 vs 0.09, but log-density -4.5 vs -4.65: component 0 is more likely.
    # z = (4, 0): log-density -8 vs -4.69: component 1.
    means = torch.zeros(2, 2, dtype=D64)
    chol = torch.stack([torch.eye(2, dtype=D64), 10.0 * torch.eye(2, dtype=D64)])
    z = torch.tensor([[3.0, 0.0], [4.0, 0.0]], dtype=D64)
    pred, accepted = gmm.classify(z, means, chol, 0.99)
    assert pred.tolist() == [0, 1]
    assert pred.tolist() == gmm.component_log_prob(z, means, chol).argmax(1).tolist()
    # acceptance is judged against the assigned component: 9 <= chi2_2(0.99) = 9.21; 0.16 too
    assert accepted.tolist() == [True, True]
    _, acc95 = gmm.classify(z, means, chol, 0.95)  # chi2_2(0.95) = 5.99 < 9
    assert acc95.tolist() == [False, True]


def test_classify_rejects_far_code_unless_q_is_one():
    means, chol = _separated_mixture(3, 4, gap=10.0)
    far = torch.full((2, 4), 1000.0, dtype=D64)
    _, acc99 = gmm.classify(far, means, chol, 0.99)
    _, acc1 = gmm.classify(far, means, chol, 1.0)
    assert acc99.tolist() == [False, False]
    assert acc1.tolist() == [True, True]


# ---------------------------------------------------------------- fit_components


def _labelled_data(k=4, d=3, n=20_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    means, chol = _random_mixture(k, d, seed=seed + 100, spread=5.0)
    labels = torch.randint(0, k, (n,), generator=g)
    z = gmm.sample(means, chol, labels, generator=g)
    return z, labels, means, chol


def _expected_cov(z, labels, k, cov_scale, shrinkage):
    out = []
    for c in range(k):
        s = np.cov(z[labels == c].numpy().T, ddof=1)
        d = s.shape[0]
        shrunk = (1 - shrinkage) * s + shrinkage * np.trace(s) / d * np.eye(d)
        out.append(cov_scale * shrunk + 1e-6 * np.eye(d))
    return torch.tensor(np.stack(out))


@pytest.mark.parametrize("cov_scale,shrinkage", [(1.0, 0.1), (0.5, 0.1), (2.0, 0.0), (1.0, 0.3)])
def test_fit_components_equals_shrunk_scaled_sample_covariance(cov_scale, shrinkage):
    k = 4
    z, labels, _, _ = _labelled_data(k=k, n=3000, seed=1)
    means, chol = gmm.fit_components(z, labels, k, cov_scale, shrinkage=shrinkage)
    for c in range(k):
        torch.testing.assert_close(means[c], z[labels == c].mean(0), rtol=1e-10, atol=1e-10)
    assert torch.equal(chol, torch.tril(chol))
    torch.testing.assert_close(chol @ chol.transpose(-1, -2),
                               _expected_cov(z, labels, k, cov_scale, shrinkage),
                               rtol=1e-9, atol=1e-9)


def test_fit_components_recovers_generating_gaussians():
    k, d = 4, 3
    z, labels, true_means, true_chol = _labelled_data(k=k, d=d, n=80_000, seed=2)
    means, chol = gmm.fit_components(z, labels, k, cov_scale=1.0, shrinkage=0.0)
    torch.testing.assert_close(means, true_means, rtol=0, atol=0.05)
    torch.testing.assert_close(chol @ chol.transpose(-1, -2),
                               true_chol @ true_chol.transpose(-1, -2), rtol=0, atol=0.06)


def test_fit_components_cov_scale_scales_covariance():
    z, labels, _, _ = _labelled_data(k=3, n=2000, seed=3)
    _, c1 = gmm.fit_components(z, labels, 3, cov_scale=1.0)
    _, c3 = gmm.fit_components(z, labels, 3, cov_scale=3.0)
    eye = 1e-6 * torch.eye(3, dtype=D64)
    cov1 = c1 @ c1.transpose(-1, -2) - eye
    cov3 = c3 @ c3.transpose(-1, -2) - eye
    torch.testing.assert_close(cov3, 3.0 * cov1, rtol=1e-9, atol=1e-9)


def test_fit_components_needs_a_code_per_component():
    z = torch.randn(7, 2, dtype=D64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])  # component 3 has none
    with pytest.raises(UserError, match=r"\[3\].*labelled_per_entity"):
        gmm.fit_components(z, labels, 4, 1.0)


def test_fit_components_single_code_takes_the_pooled_covariance():
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=D64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])  # component 2 has one code
    means, chol = gmm.fit_components(z, labels, 3, 1.0, shrinkage=0.0)
    cov = chol @ chol.transpose(-1, -2) - 1e-6 * torch.eye(2, dtype=D64)
    torch.testing.assert_close(means[2], z[6])
    torch.testing.assert_close(cov[2], (torch.cov(z[:3].T) + torch.cov(z[3:6].T)) / 2)


def test_fit_components_pooling_blends_towards_the_pooled_covariance():
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(12, 2, generator=gen, dtype=D64)
    labels = torch.tensor([0] * 3 + [1] * 4 + [2] * 5)
    own = [torch.cov(z[labels == k].T) for k in range(3)]
    pooled = (2 * own[0] + 3 * own[1] + 4 * own[2]) / 9  # weighted by degrees of freedom
    for p in (0.0, 0.3, 1.0):
        _, chol = gmm.fit_components(z, labels, 3, 1.0, shrinkage=0.0, pooling=p)
        cov = chol @ chol.transpose(-1, -2) - 1e-6 * torch.eye(2, dtype=D64)
        for k in range(3):
            torch.testing.assert_close(cov[k], (1 - p) * own[k] + p * pooled)


def test_fit_components_one_code_each_splits_the_volume_of_all_codes():
    k, d = 4, 3
    z = torch.randn(k, d, generator=torch.Generator().manual_seed(2), dtype=D64)
    means, chol = gmm.fit_components(z, torch.arange(k), k, 1.0, shrinkage=0.0)
    cov = chol @ chol.transpose(-1, -2) - 1e-6 * torch.eye(d, dtype=D64)
    torch.testing.assert_close(means, z)
    for c in cov:  # determinant k^-2 of the total: k components fill the codes' volume
        torch.testing.assert_close(c, torch.cov(z.T) * k ** (-2 / d))
        torch.testing.assert_close(torch.det(c).sqrt(), torch.det(torch.cov(z.T)).sqrt() / k)


def test_fit_components_positive_definite_with_fewer_codes_than_dims():
    d = 10
    z = torch.randn(6, d, generator=torch.Generator().manual_seed(0), dtype=D64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    means, chol = gmm.fit_components(z, labels, 2, cov_scale=0.5)
    assert torch.isfinite(chol).all() and (chol.diagonal(dim1=-2, dim2=-1) > 0).all()
    eig = torch.linalg.eigvalsh(chol @ chol.transpose(-1, -2))
    s = torch.stack([torch.cov(z[:3].T), torch.cov(z[3:].T)])
    floor = 0.5 * 0.1 * s.diagonal(dim1=-2, dim2=-1).sum(-1) / d  # shrinkage target's eigenvalue
    # shrinkage lifts every eigenvalue to at least cov_scale * s * tr/D, far above the 1e-6 jitter
    assert (eig.min(1).values >= floor * (1 - 1e-9)).all()
    assert (floor > 1e-3).all()
    # and the fitted components are usable for scoring
    assert torch.isfinite(gmm.component_log_prob(z, means, chol)).all()


# ---------------------------------------------------------------- collapse guard


def test_min_pairwise_mahalanobis_hand_example():
    means = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 8.0]], dtype=D64)
    chol = torch.stack([
        torch.eye(2, dtype=D64),                      # Sigma_0 = I
        2.0 * torch.eye(2, dtype=D64),                # Sigma_1 = 4 I
        torch.diag(torch.tensor([1.0, 4.0], dtype=D64)),  # Sigma_2 = diag(1, 16)
    ])
    # distance of mean i under component k:
    #   mean 1 | comp 0 = 3,   mean 2 | comp 0 = 8,
    #   mean 0 | comp 1 = 3/2, mean 2 | comp 1 = sqrt(9 + 64) / 2,
    #   mean 0 | comp 2 = sqrt(64/16) = 2, mean 1 | comp 2 = sqrt(9 + 64/16).   Smallest: 1.5
    assert gmm.min_pairwise_mahalanobis(means, chol) == pytest.approx(1.5, rel=1e-12)
    # drop component 1: the smallest becomes mean 0 under component 2 (=2), not 8 under 0
    assert gmm.min_pairwise_mahalanobis(means[[0, 2]], chol[[0, 2]]) == pytest.approx(2.0)
    # the inputs are not modified
    assert means[1, 0] == 3.0


def test_principal_axes_rebuild_the_covariance_widest_first():
    torch.manual_seed(0)
    a = torch.randn(3, 4, 4)
    cov = a @ a.transpose(1, 2) + 0.1 * torch.eye(4)
    sd, axes = gmm.principal_axes(torch.linalg.cholesky(cov))
    assert (sd[:, :-1] >= sd[:, 1:]).all()  # widest first
    rebuilt = axes @ torch.diag_embed(sd.pow(2)) @ axes.transpose(1, 2)
    assert torch.allclose(rebuilt, cov, atol=1e-4)
    assert torch.allclose(axes.transpose(1, 2) @ axes, torch.eye(4).expand(3, 4, 4), atol=1e-5)


def test_covariances_about_given_means_are_the_second_moments_about_them():
    torch.manual_seed(0)
    z, labels = torch.randn(40, 3), torch.arange(2).repeat(20)
    means = torch.tensor([[0.5, 0.0, 0.0], [0.0, -1.0, 2.0]])
    chol = gmm.covariances_about(z, labels, means, shrinkage=0.0)
    for k in range(2):
        diff = (z[labels == k] - means[k]).double()
        want = diff.T @ diff / len(diff) + 1e-6 * torch.eye(3, dtype=torch.float64)
        assert torch.allclose((chol[k] @ chol[k].T).double(), want, atol=1e-5)


def test_covariances_about_a_shifted_mean_hold_the_shift():
    """Codes drawn from N(0, I) seen from a mean 2 units off along x: the x variance is 1 + 4,
    so a component kept at a learnt mean that the codes have left still holds them."""
    torch.manual_seed(0)
    z = torch.randn(20000, 2)
    chol = gmm.covariances_about(z, torch.zeros(20000, dtype=torch.long),
                                 torch.tensor([[2.0, 0.0]]), shrinkage=0.0)
    cov = chol[0] @ chol[0].T
    assert cov[0, 0].item() == pytest.approx(5.0, rel=0.03)
    assert cov[1, 1].item() == pytest.approx(1.0, rel=0.03)


def test_covariances_about_give_a_lone_code_the_pooled_covariance():
    torch.manual_seed(0)
    z = torch.cat([torch.randn(30, 2) * 2, torch.tensor([[9.0, 9.0]])])
    labels = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(1, dtype=torch.long)])
    chol = gmm.covariances_about(z, labels, torch.tensor([[0.0, 0.0], [9.0, 9.0]]))
    assert torch.allclose(chol[1], chol[0])
    with pytest.raises(UserError, match="two codes"):
        gmm.covariances_about(z[-1:], labels[-1:], torch.zeros(2, 2))


def test_surest_keeps_the_k_surest_codes_of_each_component_inside_its_ellipsoid():
    means = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    chol = torch.eye(2).repeat(3, 1, 1)
    torch.manual_seed(0)
    # component 0: 30 codes; component 1: 2 codes; component 2: none; one code far outside
    z = torch.cat([torch.randn(30, 2) * 0.5, means[1] + torch.randn(2, 2) * 0.3,
                   torch.tensor([[-9.0, -9.0]])])
    keep, components = gmm.surest(z, means, chol, q=0.99, k=5)
    assert components.tolist() == [0] * 5 + [1] * 2
    assert keep[5:].sort().values.tolist() == [30, 31]  # a component with fewer gives them all
    assert 32 not in keep.tolist()  # assigned to 0 but outside its 0.99 ellipsoid
    # the five kept for component 0 are its five surest: highest log-odds against the others
    log_prob = gmm.component_log_prob(z[:30], means, chol)
    odds = log_prob[:, 0] - log_prob[:, 1:].max(1).values
    assert set(keep[:5].tolist()) == set(odds.topk(5).indices.tolist())
    assert gmm.surest(z, means, chol, q=0.99, k=0)[0].numel() == 0

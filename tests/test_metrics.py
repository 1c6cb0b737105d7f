"""common.metrics: clustering and relation accuracy on synthetic codes from a known mixture."""
import copy

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from common import gmm, metrics
from common.entities import EntitySpace
from dsprites.config import CONFIG
from dsprites.dataset import FACTOR_NAMES, FACTOR_SIZES

K, D = 27, 4
QS = metrics.QS


def _space(relations=None):
    rels = CONFIG["entities"]["relations"] if relations is None else relations
    return EntitySpace(FACTOR_NAMES, FACTOR_SIZES, copy.deepcopy(CONFIG["entities"]["bins"]),
                       copy.deepcopy(rels))


def _mixture(k=K, d=D, gap=40.0, seed=0):
    """Components `gap` apart along axis 0 with random SPD covariances (eigenvalues ~0.5-3)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(k, d, d, generator=g)
    cov = a @ a.transpose(-1, -2) / d + 0.5 * torch.eye(d)
    means = torch.zeros(k, d)
    means[:, 0] = gap * torch.arange(k, dtype=torch.float32)
    means[:, 1:] = torch.randn(k, d - 1, generator=g)
    return means, torch.linalg.cholesky(cov)


@pytest.fixture(scope="module")
def mixture():
    return _mixture()


@pytest.fixture(scope="module")
def codes(mixture):
    means, chol = mixture
    labels = torch.arange(K).repeat(1000)  # 27,000 codes
    z = gmm.sample(means, chol, labels, generator=torch.Generator().manual_seed(1))
    return z, labels


def _oracle(means, chol, table):
    """Maps each code to the mean of its relation's target (source found by classifying)."""
    def rel(z, relation_ids):
        source, _ = gmm.classify(z, means, chol, 1.0)
        return means[table[relation_ids, source]]
    return rel


def _identity(z, relation_ids):
    return z.clone()


# ---------------------------------------------------------------- clustering


def test_factor_accuracy_counts_each_factor_of_the_predicted_entity(mixture, codes):
    z, labels = codes
    space = _space()
    bins = torch.as_tensor(space.bins_of_entity(np.arange(K)))
    names = space.entity_factors
    right = metrics.factor_accuracy(z, labels, *mixture, bins, names)
    assert all(right[f"factor_acc/{n}"] > 0.999 for n in names)
    # every code labelled as the entity one posY bin further on: posY always wrong, the others
    # right, since the codes are still classified to their own components
    shifted = torch.as_tensor(space.bins_of_entity(labels.numpy()))
    shifted[:, 2] = (shifted[:, 2] + 1) % 3
    wrong = torch.as_tensor(space.entity_of_bins(shifted.numpy()))
    out = metrics.factor_accuracy(z, wrong, *mixture, bins, names)
    assert out["factor_acc/posY"] < 0.001
    assert out["factor_acc/shape"] > 0.999 and out["factor_acc/posX"] > 0.999



def test_clustering_keys(codes, mixture):
    z, labels = codes
    out = metrics.clustering(z[:500], labels[:500], *mixture)
    assert set(out) == {f"cluster_{m}@{q}" for q in QS for m in ("acc", "accept")}
    assert "cluster_acc@0.99" in out and "cluster_accept@1.0" in out


def test_clustering_correct_labels(codes, mixture):
    z, labels = codes
    out = metrics.clustering(z, labels, *mixture)
    for q in QS:
        assert out[f"cluster_acc@{q}"] == 1.0
        assert out[f"cluster_accept@{q}"] == pytest.approx(q, abs=0.015), q
    assert out["cluster_accept@1.0"] == 1.0


def test_clustering_acceptance_matches_independent_chi2_count(codes, mixture):
    z, labels = codes
    means, chol = mixture
    zz, mm = z.double().numpy(), means.double().numpy()
    cov = (chol @ chol.transpose(-1, -2)).double().numpy()
    diff = zz - mm[labels.numpy()]
    maha = np.einsum("ni,nij,nj->n", diff, np.linalg.inv(cov)[labels.numpy()], diff)
    out = metrics.clustering(z, labels, means, chol, qs=(0.3, 0.9, 0.999))
    for q in (0.3, 0.9, 0.999):
        expected = float((maha <= chi2.ppf(q, D)).mean())
        assert out[f"cluster_accept@{q}"] == pytest.approx(expected, abs=2 / len(z))


def test_clustering_permuted_labels_score_zero(codes, mixture):
    z, labels = codes
    out = metrics.clustering(z, (labels + 1) % K, *mixture)
    for q in QS:
        assert out[f"cluster_acc@{q}"] == 0.0
        # acceptance does not depend on the labels
        assert out[f"cluster_accept@{q}"] == pytest.approx(q, abs=0.015)


def test_clustering_accuracy_is_among_accepted_only(codes, mixture):
    z, labels = codes
    means, chol = mixture
    wrong = labels.clone()
    bad = torch.arange(len(z)) % 4 == 0  # a quarter of the labels are wrong
    wrong[bad] = (labels[bad] + 5) % K
    out = metrics.clustering(z, wrong, means, chol)
    for q in QS:
        _, accepted = gmm.classify(z, means, chol, q)
        expected = float((~bad & accepted).sum()) / float(accepted.sum())
        assert out[f"cluster_acc@{q}"] == pytest.approx(expected, abs=1e-12)
        assert out[f"cluster_acc@{q}"] == pytest.approx(0.75, abs=0.02)


def test_clustering_acceptance_monotone_in_q(mixture):
    means, chol = mixture
    # codes spread wider than the components: acceptance varies strongly with q
    labels = torch.arange(K).repeat(200)
    z = gmm.sample(means, 2.0 * chol, labels, generator=torch.Generator().manual_seed(3))
    qs = (0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 1.0)
    out = metrics.clustering(z, labels, means, chol, qs=qs)
    accepts = [out[f"cluster_accept@{q}"] for q in qs]
    assert accepts == sorted(accepts)
    assert accepts[0] < 0.05 and accepts[3] < 0.3 and accepts[-1] == 1.0


def test_clustering_far_codes_accepted_only_at_q_one(mixture):
    means, chol = mixture
    z = torch.full((10, D), -1e4)
    # the most likely component so far out is the broadest one, not the nearest mean
    labels = gmm.component_log_prob(z.double(), means.double(), chol.double()).argmax(1)
    out = metrics.clustering(z, labels, means, chol, qs=(0.999, 1.0))
    assert out["cluster_accept@0.999"] == 0.0 and out["cluster_acc@0.999"] == 0.0
    assert out["cluster_accept@1.0"] == 1.0 and out["cluster_acc@1.0"] == 1.0


def test_clustering_empty_input(mixture):
    means, chol = mixture
    out = metrics.clustering(torch.zeros(0, D), torch.zeros(0, dtype=torch.long), means, chol)
    assert all(v == 0.0 for v in out.values())


# ---------------------------------------------------------------- relation accuracy (latent)


def test_relation_latent_oracle_scores_one(mixture):
    means, chol = mixture
    space = _space()
    table = torch.as_tensor(space.table)
    out = metrics.relation_latent(_oracle(means, chol, table), table, space.relation_names,
                                  means, chol, per_pair=20,
                                  generator=torch.Generator().manual_seed(0))
    for name in space.relation_names:
        assert out[f"rel_acc_latent/{name}"] == 1.0
        assert out[f"rel_accept_latent/{name}"] == 1.0  # moved exactly onto the means
    assert out["rel_acc_latent"] == 1.0 and out["rel_accept_latent"] == 1.0
    expected_keys = {"rel_acc_latent", "rel_accept_latent"} | {
        f"rel_{m}_latent/{n}" for m in ("acc", "accept") for n in space.relation_names}
    assert set(out) == expected_keys


def test_relation_latent_identity_scores_zero_without_fixed_points(mixture):
    means, chol = mixture
    space = _space()
    table = torch.as_tensor(space.table)
    out = metrics.relation_latent(_identity, table, space.relation_names, means, chol,
                                  per_pair=20, q=0.9, generator=torch.Generator().manual_seed(0))
    for name in space.relation_names:
        assert out[f"rel_acc_latent/{name}"] == 0.0
        # identity leaves prior samples where they were: accepted at about q
        assert out[f"rel_accept_latent/{name}"] == pytest.approx(0.9, abs=0.03)
    assert out["rel_acc_latent"] == 0.0


def test_relation_latent_counts_fixed_points_of_saturating_relations(mixture):
    means, chol = mixture
    rels = [{"name": "left", "factor": "posX", "step": -1, "cyclic": False},
            {"name": "right", "factor": "posX", "step": 1, "cyclic": True},
            {"name": "far_down", "factor": "posY", "step": 2, "cyclic": False}]
    space = _space(rels)
    table = torch.as_tensor(space.table)
    out = metrics.relation_latent(_identity, table, space.relation_names, means, chol,
                                  per_pair=10, generator=torch.Generator().manual_seed(0))
    # identity is right exactly on the fixed points: posX bin 0 (9/27); none; posY bin 2 (9/27)
    assert out["rel_acc_latent/left"] == pytest.approx(1 / 3)
    assert out["rel_acc_latent/right"] == 0.0
    assert out["rel_acc_latent/far_down"] == pytest.approx(1 / 3)
    assert out["rel_acc_latent"] == pytest.approx(2 / 9)


def test_relation_latent_scores_each_relation_separately(mixture):
    means, chol = mixture
    space = _space()
    table = torch.as_tensor(space.table)
    oracle = _oracle(means, chol, table)
    good = {0, 3}  # left and down are learnt, the others are identity

    def partial(z, relation_ids):
        moved = oracle(z, relation_ids)
        keep = torch.tensor([int(r) not in good for r in relation_ids])
        moved[keep] = z[keep]
        return moved

    out = metrics.relation_latent(partial, table, space.relation_names, means, chol,
                                  per_pair=10, generator=torch.Generator().manual_seed(0))
    for r, name in enumerate(space.relation_names):
        assert out[f"rel_acc_latent/{name}"] == (1.0 if r in good else 0.0), name
    assert out["rel_acc_latent"] == pytest.approx(2 / 5)


def test_relation_latent_acceptance_of_noisy_oracle(mixture):
    means, chol = mixture
    space = _space()
    table = torch.as_tensor(space.table)
    gen = torch.Generator().manual_seed(5)

    def noisy(z, relation_ids):
        source, _ = gmm.classify(z, means, chol, 1.0)
        return gmm.sample(means, chol, table[relation_ids, source], generator=gen)

    out = metrics.relation_latent(noisy, table, space.relation_names, means, chol,
                                  per_pair=200, q=0.99, generator=torch.Generator().manual_seed(0))
    assert out["rel_acc_latent"] == 1.0
    for name in space.relation_names:
        assert out[f"rel_accept_latent/{name}"] == pytest.approx(0.99, abs=0.01)


def test_relation_latent_sample_layout_and_determinism(mixture):
    means, chol = mixture
    space = _space()
    table = torch.as_tensor(space.table)
    seen = []

    def spy(z, relation_ids):
        seen.append((z.clone(), relation_ids.clone()))
        return z

    args = (table, space.relation_names, means, chol)
    a = metrics.relation_latent(spy, *args, per_pair=3, generator=torch.Generator().manual_seed(7))
    b = metrics.relation_latent(spy, *args, per_pair=3, generator=torch.Generator().manual_seed(7))
    assert a == b
    z, rids = seen[0]
    assert z.shape == (5 * K * 3, D)
    np.testing.assert_array_equal(np.bincount(rids.numpy()), [K * 3] * 5)
    # every relation sees every entity per_pair times
    src, _ = gmm.classify(z, means, chol, 1.0)
    for r in range(5):
        np.testing.assert_array_equal(np.bincount(src[rids == r].numpy(), minlength=K), [3] * K)
    assert torch.equal(seen[0][0], seen[1][0])


# ---------------------------------------------------------------- relation accuracy (data)


def test_relation_data_oracle_and_identity(codes, mixture):
    means, chol = mixture
    z, labels = codes[0][:2700], codes[1][:2700]
    space = _space()
    table = torch.as_tensor(space.table)
    names = space.relation_names
    out = metrics.relation_data(_oracle(means, chol, table), z, labels, table, names, means, chol)
    expected_keys = {"rel_acc_data", "rel_accept_data"} | {
        f"rel_{m}_data/{n}" for m in ("acc", "accept") for n in names}
    assert set(out) == expected_keys
    for name in names:
        assert out[f"rel_acc_data/{name}"] == 1.0 and out[f"rel_accept_data/{name}"] == 1.0
    assert out["rel_acc_data"] == 1.0

    ident = metrics.relation_data(_identity, z, labels, table, names, means, chol, q=0.9)
    for name in names:
        assert ident[f"rel_acc_data/{name}"] == 0.0
        assert ident[f"rel_accept_data/{name}"] == pytest.approx(0.9, abs=0.03)
    assert ident["rel_acc_data"] == 0.0


def test_relation_data_uses_the_given_labels(codes, mixture):
    """Targets come from the labels, not from where the codes happen to lie."""
    means, chol = mixture
    z, labels = codes[0][:2700], codes[1][:2700]
    space = _space()
    table = torch.as_tensor(space.table)
    oracle = _oracle(means, chol, table)
    wrong = labels.clone()
    wrong[::3] = (labels[::3] + 9) % K  # next shape, same position: a third mislabelled
    out = metrics.relation_data(oracle, z, wrong, table, space.relation_names, means, chol)
    assert out["rel_acc_data"] == pytest.approx(2 / 3)
    for name in space.relation_names:
        assert out[f"rel_acc_data/{name}"] == pytest.approx(2 / 3)
        assert out[f"rel_accept_data/{name}"] == 1.0


def test_relation_data_fixed_points(codes, mixture):
    means, chol = mixture
    z, labels = codes[0][:2700], codes[1][:2700]  # every entity 100 times
    rels = [{"name": "up", "factor": "posY", "step": -1, "cyclic": False},
            {"name": "next_shape", "factor": "shape", "step": 1, "cyclic": True}]
    space = _space(rels)
    table = torch.as_tensor(space.table)
    out = metrics.relation_data(_identity, z, labels, table, space.relation_names, means, chol)
    assert out["rel_acc_data/up"] == pytest.approx(1 / 3)
    assert out["rel_acc_data/next_shape"] == 0.0
    assert out["rel_acc_data"] == pytest.approx(1 / 6)

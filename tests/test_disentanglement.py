"""common.disentanglement: known answers on a toy dataset whose "representation" is a fixed
function of its ground-truth factors (identity, constant, noise, duplicated, rotated), as
disentanglement_lib's metric tests do, and agreement with a straightforward transcription of
disentanglement_lib's own code (the REFERENCE section: dimension-major arrays, as it stores
them)."""
import math

import numpy as np
import pytest
import scipy.stats
from sklearn import ensemble, linear_model, metrics, svm

from common import disentanglement as dis
from common.errors import UserError

SIZES = (4, 5, 6)
F = len(SIZES)
CHANCE = float(np.mean([1 / s for s in SIZES]))  # accuracy of a factor predictor without information
N_TRAIN, N_TEST = 3000, 1500
N_DCI = 1000


def _sample_factors(rng, n):
    return np.stack([rng.integers(s, size=n) for s in SIZES], 1)  # (n, F)


def identity(f, rng):
    """Each factor scaled to about unit range in its own dimension, with tiny noise."""
    return (f - (np.array(SIZES) - 1) / 2) / np.array(SIZES) + 0.01 * rng.standard_normal(f.shape)


def constant(f, rng):
    return np.zeros((len(f), F))


def noise(f, rng):
    return rng.standard_normal((len(f), F))


def duplicated(f, rng):
    """Factor 0 copied into two dimensions (independent tiny noise each)."""
    z = identity(f, rng)
    return np.concatenate([z[:, :1], z[:, :1] + 0.01 * rng.standard_normal((len(f), 1)), z[:, 1:]], 1)


def rotated(f, rng):
    """Factors 0 and 1 mixed by a 45-degree rotation; factor 2 left alone."""
    z = identity(f, rng)
    a, b = z[:, 0].copy(), z[:, 1].copy()
    z[:, 0], z[:, 1] = (a + b) / math.sqrt(2), (a - b) / math.sqrt(2)
    return z


def _arrays(rep, n, seed):
    rng = np.random.default_rng(seed)
    f = _sample_factors(rng, n)
    return rep(f, rng), f


def _sample_fn(rep, seed=10):
    """FactorVAE interface: codes of `batch` points with factor k fixed at `value` (None: none fixed)."""
    rng = np.random.default_rng(seed)

    def sample(k, value, batch):
        f = _sample_factors(rng, batch)
        if k is not None:
            f[:, k] = value
        return rep(f, rng)
    return sample


def _pair_fn(rep, seed=20):
    """BetaVAE interface: pairs of codes sharing factor k (= values[i] for pair i)."""
    rng = np.random.default_rng(seed)

    def pairs(k, values):
        f1, f2 = _sample_factors(rng, len(values)), _sample_factors(rng, len(values))
        f1[:, k] = f2[:, k] = values
        return rep(f1, rng), rep(f2, rng)
    return pairs


@pytest.fixture(scope="module")
def dci_scores():
    out = {}
    for rep in (identity, constant, noise, duplicated, rotated):
        z_train, f_train = _arrays(rep, N_DCI, 1)  # the trees take a while: fewer points
        z_test, f_test = _arrays(rep, N_DCI // 2, 2)
        out[rep.__name__] = dis.dci(z_train, f_train, z_test, f_test)
    return out


# ---------------------------------------------------------------- discretize and mutual information


@pytest.mark.parametrize("bins", [2, 7, 20])
def test_discretize_gives_labels_one_to_bins(bins):
    codes = np.random.default_rng(0).standard_normal((5000, 3))
    labels = dis.discretize(codes, bins)
    assert labels.shape == codes.shape
    for i in range(3):
        assert np.array_equal(np.unique(labels[:, i]), np.arange(1, bins + 1))
        # equal-width bins: the minimum is in bin 1 and the maximum in the last bin
        assert labels[codes[:, i].argmin(), i] == 1 and labels[codes[:, i].argmax(), i] == bins


def test_discretize_constant_dimension_is_one_bin():
    assert len(np.unique(dis.discretize(np.full((100, 1), 3.0), 20))) == 1


def test_mutual_info_matrix_matches_hand_computed():
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 1, 1]])  # (4 points, 3 codes)
    factors = np.array([[0], [0], [1], [1]])
    got = dis.mutual_info_matrix(codes, factors)
    # code 0 = (0,0,0,1) vs factor (0,0,1,1): p(0,0)=1/2, p(0,1)=1/4, p(1,1)=1/4
    by_hand = 0.5 * math.log(0.5 / (0.75 * 0.5)) + 0.25 * math.log(0.25 / (0.75 * 0.5)) \
        + 0.25 * math.log(0.25 / (0.25 * 0.5))
    assert got.shape == (3, 1)
    assert got[0, 0] == pytest.approx(by_hand, abs=1e-12)
    assert got[1, 0] == pytest.approx(math.log(2), abs=1e-12)  # code 1 equals the factor
    assert got[2, 0] == pytest.approx(0.0, abs=1e-12)  # code 2 is independent of it


# ---------------------------------------------------------------- MIG


def test_mig_identity_near_one():
    assert dis.mig(*_arrays(identity, N_TRAIN, 1))["mig"] > 0.95


def test_mig_constant_and_noise_near_zero():
    assert dis.mig(*_arrays(constant, N_TRAIN, 1))["mig"] == 0.0
    assert dis.mig(*_arrays(noise, N_TRAIN, 1))["mig"] < 0.03


def test_mig_duplicated_factor_has_no_gap():
    # the duplicated factor's gap is ~0, the other two are ~1
    assert dis.mig(*_arrays(duplicated, N_TRAIN, 1))["mig"] == pytest.approx((F - 1) / F, abs=0.03)


def test_mig_rotation_lowers_it():
    mixed = dis.mig(*_arrays(rotated, N_TRAIN, 1))["mig"]
    assert mixed < dis.mig(*_arrays(identity, N_TRAIN, 1))["mig"] - 0.3


# ---------------------------------------------------------------- SAP


def test_sap_identity_is_what_the_svm_finds_on_raw_codes_at_their_scale():
    z, f = _arrays(identity, N_TRAIN, 1)
    # LinearSVC(C=0.01) on one raw dimension: at about unit range the regularisation keeps the
    # margins small, so even the matching dimension classifies poorly; spread 100x, it is free
    # to. No standardisation, as disentanglement_lib.
    small, large = dis.sap(z, f)["sap"], dis.sap(100 * z, f)["sap"]
    assert small == pytest.approx(reference_sap(z, f), abs=0.01)
    assert large == pytest.approx(reference_sap(100 * z, f), abs=0.01)
    assert small < 0.4 and large > small + 0.2
    assert dis.sap(z, f, continuous=True)["sap"] > 0.95


def test_sap_constant_is_zero():
    z, f = _arrays(constant, N_TRAIN, 1)
    assert dis.sap(z, f)["sap"] == pytest.approx(0.0, abs=1e-12)
    assert dis.sap(z, f, continuous=True)["sap"] == 0.0


def test_sap_noise_near_zero():
    z, f = _arrays(noise, N_TRAIN, 1)
    assert dis.sap(100 * z, f)["sap"] < 0.05
    assert dis.sap(z, f, continuous=True)["sap"] < 0.01


def test_sap_duplicated_factor_has_no_gap():
    z, f = _arrays(duplicated, N_TRAIN, 1)
    assert dis.sap(z, f, continuous=True)["sap"] == pytest.approx((F - 1) / F, abs=0.03)


# ---------------------------------------------------------------- DCI


def test_dci_formulas_on_hand_made_importances():
    assert dis.dci_disentanglement(np.eye(3)) == pytest.approx(1.0, abs=1e-6)
    assert dis.dci_completeness(np.eye(3)) == pytest.approx(1.0, abs=1e-6)
    for flat in (np.ones((3, 3)), np.zeros((3, 3))):
        assert dis.dci_disentanglement(flat) == pytest.approx(0.0, abs=1e-6)
        assert dis.dci_completeness(flat) == pytest.approx(0.0, abs=1e-6)
    # code 0 serves factor 0 only (D_0 = 1), code 1 both equally (D_1 = 0); code 1 carries 2/3 of
    # the importance, so D = 1/3 (an unweighted mean would give 1/2). Likewise C = 1/3.
    r = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert dis.dci_disentanglement(r) == pytest.approx(1 / 3, abs=1e-6)
    assert dis.dci_completeness(r) == pytest.approx(1 / 3, abs=1e-6)
    # entropy in base num_factors: a code split evenly over 2 of 4 factors scores 1 - log 2 / log 4
    split = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert dis.dci_disentanglement(split) == pytest.approx((0.5 * 2 + 1 + 1) / 4, abs=1e-6)


def test_dci_identity(dci_scores):
    s = dci_scores["identity"]
    assert s["dci_disentanglement"] > 0.9
    assert s["dci_completeness"] > 0.9
    assert s["dci_informativeness"] > 0.95


def test_dci_constant(dci_scores):
    s = dci_scores["constant"]
    assert s["dci_disentanglement"] == pytest.approx(0.0, abs=1e-6)
    assert s["dci_completeness"] == pytest.approx(0.0, abs=1e-6)
    assert s["dci_informativeness"] == pytest.approx(CHANCE, abs=0.05)


def test_dci_noise_is_near_zero_with_the_trees(dci_scores):
    # a sparse linear predictor makes noise look disentangled (0.23); the trees spread their
    # importance over every code, as disentanglement_lib's do
    s = dci_scores["noise"]
    assert s["dci_disentanglement"] < 0.05 and s["dci_completeness"] < 0.05
    assert s["dci_informativeness"] == pytest.approx(CHANCE, abs=0.05)
    assert s["dci_informativeness_train"] > s["dci_informativeness"] + 0.2  # trees overfit noise


def test_dci_duplicated_factor_lowers_completeness_only(dci_scores):
    s = dci_scores["duplicated"]
    # factor 0 shared evenly by 2 of 4 codes: C_0 = 1 - log 2 / log 4 = 1/2, the others 1
    assert s["dci_completeness"] == pytest.approx((0.5 + 1 + 1) / 3, abs=0.05)
    assert s["dci_completeness"] < dci_scores["identity"]["dci_completeness"] - 0.1
    assert s["dci_disentanglement"] > 0.9


def test_dci_rotation_lowers_disentanglement(dci_scores):
    s = dci_scores["rotated"]
    # two codes split evenly over 2 of 3 factors, each 1/3 of the importance: D = (2 (1 - log_3 2) + 1) / 3
    expected = (2 * (1 - math.log(2) / math.log(3)) + 1) / 3
    assert s["dci_disentanglement"] == pytest.approx(expected, abs=0.05)
    assert s["dci_disentanglement"] < dci_scores["identity"]["dci_disentanglement"] - 0.3
    assert s["dci_informativeness"] > 0.95  # the factors are still decodable
    z_train, f_train = _arrays(rotated, N_DCI, 1)
    z_test, f_test = _arrays(rotated, N_DCI // 2, 2)
    importance, _, _ = dis.dci_importance(z_train, f_train, z_test, f_test)
    assert s["dci_disentanglement"] == pytest.approx(dis.dci_disentanglement(importance), abs=1e-9)


def test_dci_on_threads_gives_the_sequential_numbers_exactly():
    z_train, f_train = _arrays(rotated, 300, 1)
    z_test, f_test = _arrays(rotated, 150, 2)
    one = dis.dci_importance(z_train, f_train, z_test, f_test, workers=1)
    three = dis.dci_importance(z_train, f_train, z_test, f_test, workers=3)
    assert np.array_equal(one[0], three[0]) and one[1:] == three[1:]
    assert one[0].shape == (z_train.shape[1], f_train.shape[1]) and one[0].sum() > 0
    with pytest.raises(UserError, match="workers must be >= 1"):
        dis.dci_importance(z_train, f_train, z_test, f_test, workers=0)


@pytest.mark.parametrize("rep", [identity, noise, rotated])
def test_dci_sap_mig_equal_disentanglement_libs_definitions(rep):
    z_train, f_train = _arrays(rep, 600, 1)
    z_test, f_test = _arrays(rep, 300, 2)
    want = reference_dci(z_train.T, f_train.T, z_test.T, f_test.T)
    got = dis.dci(z_train, f_train, z_test, f_test)
    for key in ("dci_disentanglement", "dci_completeness", "dci_informativeness"):
        assert got[key] == pytest.approx(want[key], abs=0.01), key
    z, f = 10 * z_train, f_train  # a scale at which SAP's SVMs separate something
    assert dis.sap(z, f)["sap"] == pytest.approx(reference_sap(z, f), abs=0.01)
    assert dis.mig(z, f)["mig"] == pytest.approx(reference_mig(z.T, f.T), abs=0.01)


# ---------------------------------------------------------------- FactorVAE and BetaVAE


def test_factor_vae_identity_near_one():
    assert dis.factor_vae_score(_sample_fn(identity), SIZES, np.random.default_rng(0))["factor_vae"] > 0.95


def test_factor_vae_noise_at_chance():
    score = dis.factor_vae_score(_sample_fn(noise), SIZES, np.random.default_rng(0))["factor_vae"]
    assert score == pytest.approx(1 / F, abs=0.1)


def test_factor_vae_constant_has_no_active_dims():
    # disentanglement_lib's convention: with every dimension pruned the score is 0, not chance
    out = dis.factor_vae_score(_sample_fn(constant), SIZES, np.random.default_rng(0))
    assert out["num_active_dims"] == 0 and out["factor_vae"] == 0.0


def test_beta_vae_identity_near_one():
    assert dis.beta_vae_score(_pair_fn(identity), SIZES, np.random.default_rng(0))["beta_vae"] > 0.95


@pytest.mark.parametrize("rep", [constant, noise])
def test_beta_vae_uninformative_at_chance(rep):
    score = dis.beta_vae_score(_pair_fn(rep), SIZES, np.random.default_rng(0))["beta_vae"]
    assert score == pytest.approx(1 / F, abs=0.08)


# ---------------------------------------------------------------- bad arguments


def test_bad_arguments_raise_user_error():
    z, f = _arrays(identity, 200, 1)
    with pytest.raises(UserError, match="integer"):
        dis.mig(z, f + 0.5)
    with pytest.raises(UserError, match="num_points"):
        dis.mig(z, f[:100])
    with pytest.raises(UserError, match="at least 2 code"):
        dis.mig(z[:, :1], f)
    with pytest.raises(UserError, match="constant"):
        dis.mig(z, np.zeros_like(f))
    with pytest.raises(UserError, match="NaN"):
        dis.sap(np.full_like(z, np.nan), f)
    with pytest.raises(UserError, match="bins"):
        dis.discretize(z, 1)
    with pytest.raises(UserError, match="differ"):
        dis.dci(z, f, z[:, :2], f)
    with pytest.raises(UserError, match="Generator"):
        dis.factor_vae_score(_sample_fn(identity), SIZES, 0)
    with pytest.raises(UserError, match="shape"):
        dis.beta_vae_score(lambda k, v: (np.zeros((3, F)), np.zeros((3, F))), SIZES, np.random.default_rng(0))


def test_scores_from_codes_identity_beats_constant_and_drops_constant_factors():
    from common.disentanglement import scores_from_codes

    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, n, 2000) for n in (4, 5, 6)] + [np.zeros(2000, int)], 1)
    factors[:, :3] += 10  # raw indices need not start at 0
    identity = factors[:, :3] + 0.01 * rng.standard_normal((2000, 3))
    good = scores_from_codes(identity[:1000], factors[:1000], identity[1000:], factors[1000:],
                             max_dci_points=500)
    flat = np.zeros((2000, 3)) + 0.01 * rng.standard_normal((2000, 3))
    bad = scores_from_codes(flat[:1000], factors[:1000], flat[1000:], factors[1000:],
                            max_dci_points=500)
    assert set(good) == {"mig", "sap", "dci_disentanglement", "dci_completeness",
                         "dci_informativeness", "dci_informativeness_train", "factor_vae",
                         "beta_vae"}
    assert good["mig"] > 0.9 and good["dci_disentanglement"] > 0.9
    assert good["factor_vae"] > 0.9 and good["beta_vae"] > 0.9
    assert bad["mig"] < 0.05 and bad["dci_informativeness"] < 0.4 and bad["beta_vae"] < 0.5


# ---------------------------------------------------------------- REFERENCE
# disentanglement_lib's definitions, transcribed as they read there (mus and ys are
# (num_codes or num_factors, num_points)), with its scikit-learn estimators.


def reference_mig(mus, ys, num_bins=20):
    discretized = np.zeros_like(mus, dtype=np.int64)
    for i in range(mus.shape[0]):
        discretized[i] = np.digitize(mus[i], np.histogram(mus[i], num_bins)[1][:-1])
    m = np.array([[metrics.mutual_info_score(ys[j], discretized[i]) for j in range(ys.shape[0])]
                  for i in range(mus.shape[0])])
    entropy = np.array([metrics.mutual_info_score(ys[j], ys[j]) for j in range(ys.shape[0])])
    sorted_m = np.sort(m, axis=0)[::-1]
    return np.mean(np.divide(sorted_m[0] - sorted_m[1], entropy))


def reference_sap(codes, factors, test_fraction=1 / 3):
    """Its _compute_score_matrix on our fixed train/test split, then the top-two gap."""
    order = np.random.default_rng(0).permutation(len(codes))  # the split dis.sap uses
    n_test = int(round(len(codes) * test_fraction))
    train, test = order[n_test:], order[:n_test]
    mus, ys, mus_test, ys_test = codes[train].T, factors[train].T, codes[test].T, factors[test].T
    score_matrix = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            classifier = svm.LinearSVC(C=0.01, class_weight="balanced", random_state=0)
            classifier.fit(mus[i, :][:, np.newaxis], ys[j, :])
            pred = classifier.predict(mus_test[i, :][:, np.newaxis])
            score_matrix[i, j] = np.mean(pred == ys_test[j, :])
    sorted_matrix = np.sort(score_matrix, axis=0)
    return np.mean(sorted_matrix[-1, :] - sorted_matrix[-2, :])


def reference_dci(x_train, y_train, x_test, y_test):
    importance_matrix = np.zeros([x_train.shape[0], y_train.shape[0]])
    test_loss = []
    for i in range(y_train.shape[0]):
        model = ensemble.GradientBoostingClassifier(random_state=0)
        model.fit(x_train.T, y_train[i, :])
        importance_matrix[:, i] = np.abs(model.feature_importances_)
        test_loss.append(np.mean(model.predict(x_test.T) == y_test[i, :]))
    per_code = 1. - scipy.stats.entropy(importance_matrix.T + 1e-11,
                                        base=importance_matrix.shape[1])
    code_importance = importance_matrix.sum(axis=1) / importance_matrix.sum()
    per_factor = 1. - scipy.stats.entropy(importance_matrix + 1e-11,
                                          base=importance_matrix.shape[0])
    factor_importance = importance_matrix.sum(axis=0) / importance_matrix.sum()
    return {"dci_disentanglement": np.sum(per_code * code_importance),
            "dci_completeness": np.sum(per_factor * factor_importance),
            "dci_informativeness": np.mean(test_loss)}


"""Supervised disentanglement metrics: MIG, SAP, DCI, FactorVAE and BetaVAE scores.

Definitions and estimators follow disentanglement_lib (Locatello et al. 2019), so the numbers can
be set beside published ones: scikit-learn's GradientBoostingClassifier per factor for DCI,
LinearSVC(C=0.01, class_weight="balanced") per code and factor for SAP, LogisticRegression for
the BetaVAE score, the majority vote for FactorVAE, 20 equal-width bins for MIG; each with a fixed
random_state. Conventions, unlike disentanglement_lib (which stores one row per dimension):
`codes` is (num_points, num_codes) float, `factors` is (num_points, num_factors) integer-valued
ground-truth factors, one row per sample. disentanglement_lib draws fresh samples of the whole
factor grid (10,000 to fit, 5,000 to score); here the points are stored held-out codes, so the
sample sizes are what a split holds (each docstring gives its defaults and the reference's).
"""

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.stats import entropy
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from common.errors import UserError

RANDOM_STATE = 0  # every scikit-learn estimator's, so a score is reproducible
ENTROPY_EPS = 1e-11  # added to importances before the DCI entropies, as disentanglement_lib


# ---------------------------------------------------------------- input checks


def _check_codes(codes, name="codes") -> np.ndarray:
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] < 2 or codes.shape[1] < 1:
        raise UserError(f"{name} must be (num_points >= 2, num_codes >= 1), got shape {codes.shape}")
    if not np.isfinite(codes).all():
        raise UserError(f"{name} contains NaN or inf; check the encoder outputs")
    return codes


def _check_discrete(values, num_points, name) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] != num_points:
        raise UserError(f"{name} must be (num_points={num_points}, num_columns), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        if not np.issubdtype(values.dtype, np.number) or not np.all(np.mod(values, 1) == 0):
            raise UserError(f"{name} must hold integer values (discrete labels), got dtype {values.dtype}")
        values = values.astype(np.int64)
    return values


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise UserError(f"rng must be a numpy Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def _check_factor_sizes(factor_sizes) -> list:
    sizes = [int(s) for s in factor_sizes]
    if len(sizes) < 2 or min(sizes) < 2:
        raise UserError(f"factor_sizes needs at least 2 factors of at least 2 values each, got {sizes}")
    return sizes


# ---------------------------------------------------------------- discrete information


def discretize(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Bin each code dimension into `bins` equal-width bins over its own range: labels 1..bins.

    As disentanglement_lib's _histogram_discretize (np.digitize against np.histogram's left edges),
    so the minimum lands in bin 1 and the maximum in bin `bins`. (N, C) float -> (N, C) int64.
    """
    codes = _check_codes(codes)
    if int(bins) != bins or bins < 2:
        raise UserError(f"bins must be an integer >= 2, got {bins}")
    out = np.zeros(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], int(bins))[1]
        out[:, i] = np.digitize(codes[:, i], edges[:-1])
    return out


def mutual_info_matrix(codes_discrete: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Plug-in mutual information I(code_i; factor_j) in nats: (N, C), (N, F) -> (C, F).

    scikit-learn's mutual_info_score of each pair (disentanglement_lib's discrete_mutual_info).
    """
    codes_discrete = np.asarray(codes_discrete)
    codes_discrete = _check_discrete(codes_discrete, len(codes_discrete) if codes_discrete.ndim else -1,
                                     "codes_discrete")
    factors = _check_discrete(factors, codes_discrete.shape[0], "factors")
    return np.array([[mutual_info_score(codes_discrete[:, i], factors[:, j])
                      for j in range(factors.shape[1])] for i in range(codes_discrete.shape[1])])


def _top_two_gap(scores: np.ndarray) -> np.ndarray:
    """Best minus second-best entry of each column: (C, F) -> (F,)."""
    ranked = np.sort(scores, axis=0)
    return ranked[-1] - ranked[-2]


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> dict:
    """Mutual Information Gap (Chen et al. 2018), disentanglement_lib's discrete estimator.

    Codes are binned per dimension (`discretize`, 20 bins as disentanglement_lib); MI and factor
    entropies are plug-in estimates in nats. MIG = mean over factors of
    (largest - second largest I(code; factor)) / H(factor). disentanglement_lib draws 10,000 points.
    """
    codes = _check_codes(codes)
    factors = _check_discrete(factors, codes.shape[0], "factors")
    if codes.shape[1] < 2:
        raise UserError("MIG needs at least 2 code dimensions (it compares the top two)")
    info = mutual_info_matrix(discretize(codes, bins), factors)
    factor_entropy = np.array([mutual_info_score(f, f) for f in factors.T])
    if (factor_entropy == 0).any():
        raise UserError(f"factors {np.flatnonzero(factor_entropy == 0).tolist()} are constant; "
                        "MIG divides by their entropy")
    return {"mig": float(np.mean(_top_two_gap(info) / factor_entropy))}


# ---------------------------------------------------------------- SAP


def _train_test_split(n: int, test_fraction: float):
    # a fixed permutation, so that rows stored in grid order still give a fair split
    order = np.random.default_rng(0).permutation(n)
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n_test > n - 2:
        raise UserError(f"test_fraction={test_fraction} leaves no usable train/test split of {n} points")
    return order[n_test:], order[:n_test]


def _sap_classification(codes, factors, test_fraction) -> np.ndarray:
    """Test accuracy of LinearSVC(C=0.01, class_weight="balanced") on each single raw code
    dimension for each factor: (C, F), as disentanglement_lib's _compute_score_matrix."""
    train, test = _train_test_split(len(codes), test_fraction)
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for j in range(factors.shape[1]):
        y_train, y_test = factors[train, j], factors[test, j]
        for i in range(codes.shape[1]):
            if len(np.unique(y_train)) < 2:  # nothing to learn: every prediction is that value
                scores[i, j] = np.mean(y_test == y_train[0])
                continue
            svm = LinearSVC(C=0.01, class_weight="balanced", random_state=RANDOM_STATE)
            svm.fit(codes[train, i:i + 1], y_train)
            scores[i, j] = np.mean(svm.predict(codes[test, i:i + 1]) == y_test)
    return scores


def _sap_correlation(codes, factors) -> np.ndarray:
    """Squared Pearson correlation of every code with every factor, 0 for constant codes."""
    c = codes - codes.mean(0)
    f = factors - factors.mean(0)
    cov = c.T @ f / (len(codes) - 1)
    var_c, var_f = c.var(0, ddof=1), f.var(0, ddof=1)
    return np.where(var_c[:, None] > 1e-12, cov ** 2 / (np.outer(var_c, var_f) + 1e-300), 0.0)


def sap(codes: np.ndarray, factors: np.ndarray, continuous: bool = False,
        test_fraction: float = 1 / 3) -> dict:
    """Separated Attribute Predictability (Kumar et al. 2018): mean over factors of the gap
    between the two code dimensions that predict it best.

    Discrete factors (default), as disentanglement_lib: for every (code dim, factor) a
    LinearSVC(C=0.01, class_weight="balanced") is fitted on that one raw dimension (no
    standardisation, so the score depends on the codes' scale as the reference's does) over a
    train split and scored by plain accuracy on the held-out rest (test_fraction; the reference
    draws 10,000 train and 5,000 test points). continuous=True: score = squared correlation of
    code and factor on all points.
    """
    codes = _check_codes(codes)
    factors = _check_discrete(factors, codes.shape[0], "factors")
    if codes.shape[1] < 2:
        raise UserError("SAP needs at least 2 code dimensions (it compares the top two)")
    if continuous:
        scores = _sap_correlation(codes, factors.astype(np.float64))
    else:
        scores = _sap_classification(codes, factors, test_fraction)
    return {"sap": float(np.mean(_top_two_gap(scores)))}


# ---------------------------------------------------------------- DCI


def _normalised_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """Entropy of the distributions along `axis` (normalised there first), in base p.shape[axis]."""
    return entropy(p, base=p.shape[axis], axis=axis)


def _check_importance(importance) -> np.ndarray:
    importance = np.asarray(importance, dtype=np.float64)
    if importance.ndim != 2 or min(importance.shape) < 2 or (importance < 0).any():
        raise UserError(f"importance must be non-negative (num_codes >= 2, num_factors >= 2), "
                        f"got shape {importance.shape}")
    return importance


def _weighted_specificity(importance: np.ndarray, axis: int) -> float:
    """Sum over slices along `axis` of (1 - normalised entropy), weighted by each slice's share
    of the total importance: disentanglement over codes (axis=1), completeness over factors
    (axis=0)."""
    specificity = 1.0 - _normalised_entropy(importance + ENTROPY_EPS, axis=axis)
    if importance.sum() == 0:
        importance = np.ones_like(importance)
    weight = importance.sum(axis) / importance.sum()
    return float(np.sum(specificity * weight))


def dci_disentanglement(importance: np.ndarray) -> float:
    """DCI disentanglement of an importance matrix R (num_codes, num_factors), Eastwood & Williams.

    D_i = 1 - H_F(P_i.) with P_ij = R_ij / sum_k R_ik; D = sum_i rho_i D_i with the relative code
    importance rho_i = sum_j R_ij / sum R. All-zero R is scored as all-equal (D = 0).
    """
    return _weighted_specificity(_check_importance(importance), axis=1)


def dci_completeness(importance: np.ndarray) -> float:
    """DCI completeness of R (num_codes, num_factors): C_j = 1 - H_C(R_.j / sum_i R_ij), weighted by
    the relative factor importance sum_i R_ij / sum R (as disentanglement_lib; equal weights, the
    paper's plain mean, when every column sums to 1). All-zero R is scored as all-equal (C = 0).
    """
    return _weighted_specificity(_check_importance(importance), axis=0)


def _fit_trees(codes_train, y_train, codes_test, y_test):
    """(importances (num_codes,), train accuracy, test accuracy) of one factor's trees."""
    if len(np.unique(y_train)) < 2:  # a constant factor: no code matters, every guess right
        return np.zeros(codes_train.shape[1]), 1.0, float(np.mean(y_test == y_train[0]))
    trees = GradientBoostingClassifier(random_state=RANDOM_STATE).fit(codes_train, y_train)
    return (np.abs(trees.feature_importances_), float(np.mean(trees.predict(codes_train) == y_train)),
            float(np.mean(trees.predict(codes_test) == y_test)))


def dci_importance(codes_train, factors_train, codes_test, factors_test, workers: int = 1):
    """Importance matrix (num_codes, num_factors) and the mean train and test accuracy of one
    GradientBoostingClassifier per factor (scikit-learn's defaults, fixed random_state), as
    disentanglement_lib's compute_importance_gbt: importance = |feature_importances_|.

    The factors' trees are fitted on up to `workers` threads at once: scikit-learn builds a tree
    without holding the GIL, and each factor's trees are seeded alone, so the numbers do not
    depend on `workers`."""
    codes_train, codes_test = _check_codes(codes_train, "codes_train"), _check_codes(codes_test, "codes_test")
    factors_train = _check_discrete(factors_train, codes_train.shape[0], "factors_train")
    factors_test = _check_discrete(factors_test, codes_test.shape[0], "factors_test")
    if codes_train.shape[1] != codes_test.shape[1] or factors_train.shape[1] != factors_test.shape[1]:
        raise UserError(f"train and test shapes differ: codes {codes_train.shape[1]} vs "
                        f"{codes_test.shape[1]}, "
                        f"factors {factors_train.shape[1]} vs {factors_test.shape[1]}")
    num_factors = factors_train.shape[1]
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    workers = min(workers, num_factors)
    jobs = [(codes_train, factors_train[:, j], codes_test, factors_test[:, j])
            for j in range(num_factors)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        fitted = list(pool.map(lambda job: _fit_trees(*job), jobs))
    importance = np.stack([imp for imp, _, _ in fitted], axis=1)
    return (importance, float(np.mean([acc for _, acc, _ in fitted])),
            float(np.mean([acc for _, _, acc in fitted])))


def dci(codes_train, factors_train, codes_test, factors_test, workers: int = 1) -> dict:
    """DCI (Eastwood & Williams 2018) as disentanglement_lib computes it: disentanglement and
    completeness from the gradient-boosted trees' importances (`dci_importance`,
    `dci_disentanglement`, `dci_completeness`), informativeness = mean test accuracy over
    factors (and its train accuracy). The reference fits on 10,000 points and tests on 5,000.
    workers: threads fitting the factors' trees at once (the numbers do not depend on it)."""
    importance, train_acc, test_acc = dci_importance(codes_train, factors_train, codes_test,
                                                     factors_test, workers)
    return {"dci_disentanglement": dci_disentanglement(importance),
            "dci_completeness": dci_completeness(importance),
            "dci_informativeness": test_acc,
            "dci_informativeness_train": train_acc}


# ---------------------------------------------------------------- intervention-based scores


def _check_sampled(codes, batch, num_codes=None) -> np.ndarray:
    codes = _check_codes(codes, "sampled codes")
    if codes.shape[0] != batch or (num_codes is not None and codes.shape[1] != num_codes):
        raise UserError(f"the sampling callable returned shape {codes.shape}, expected ({batch}, "
                        f"{num_codes if num_codes is not None else 'num_codes'})")
    return codes


def _factor_vae_votes(sample_fn, sizes, rng, global_var, active, batch_size, num_points) -> np.ndarray:
    """Votes (num_factors, num_active): which active dim has least normalised variance per fixed factor."""
    votes = np.zeros((len(sizes), int(active.sum())), dtype=np.int64)
    for _ in range(num_points):
        k = int(rng.integers(len(sizes)))
        codes = sample_fn(k, int(rng.integers(sizes[k])), batch_size)
        codes = _check_sampled(codes, batch_size, len(global_var))
        local_var = codes.var(0, ddof=1)
        votes[k, np.argmin(local_var[active] / global_var[active])] += 1
    return votes


def factor_vae_score(sample_fn, factor_sizes, rng, batch_size: int = 64, num_train: int = 10000,
                     num_eval: int = 5000, num_variance_estimate: int = 10000,
                     prune_threshold: float = 0.05) -> dict:
    """FactorVAE score (Kim & Mnih 2018) as in disentanglement_lib.

    sample_fn(factor_index, value, batch) -> codes (batch, num_codes) of points whose factor
    `factor_index` equals `value` and whose other factors are random; sample_fn(None, None, n) ->
    codes of n points with every factor random. Each vote: fix a uniformly drawn factor at a
    uniformly drawn value, take the code dimension of least variance divided by its global variance
    (dims with global std < prune_threshold are dropped). The classifier is the majority vote
    (factor per dimension) on num_train votes; the score is its accuracy on num_eval fresh votes.
    No active dimension scores 0, as disentanglement_lib. Sample sizes as disentanglement_lib's:
    batch 64, 10,000 train and 5,000 eval votes, 10,000 points for the global variance.
    """
    sizes, rng = _check_factor_sizes(factor_sizes), _check_rng(rng)
    if batch_size < 2 or num_train < 1 or num_eval < 1 or num_variance_estimate < 2:
        raise UserError("batch_size and num_variance_estimate must be >= 2, num_train and num_eval >= 1")
    unfixed = _check_sampled(sample_fn(None, None, num_variance_estimate), num_variance_estimate)
    global_var = unfixed.var(0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    if not active.any():
        return {"factor_vae": 0.0, "factor_vae_train": 0.0, "num_active_dims": 0}
    train = _factor_vae_votes(sample_fn, sizes, rng, global_var, active, batch_size, num_train)
    classifier = train.argmax(0)  # (num_active,) the factor each dimension votes for most
    evals = _factor_vae_votes(sample_fn, sizes, rng, global_var, active, batch_size, num_eval)
    dims = np.arange(train.shape[1])
    return {"factor_vae": float(evals[classifier, dims].sum() / evals.sum()),
            "factor_vae_train": float(train[classifier, dims].sum() / train.sum()),
            "num_active_dims": int(active.sum())}


def _beta_vae_points(sample_pair_fn, sizes, rng, batch_size, num_points):
    """Features (num_points, num_codes) = mean |z1 - z2| over a batch of pairs sharing one factor."""
    features, labels = [], []
    for _ in range(num_points):
        k = int(rng.integers(len(sizes)))
        z1, z2 = sample_pair_fn(k, rng.integers(sizes[k], size=batch_size))
        z1 = _check_sampled(z1, batch_size)
        z2 = _check_sampled(z2, batch_size, z1.shape[1])
        features.append(np.abs(z1 - z2).mean(0))
        labels.append(k)
    return np.stack(features), np.array(labels)


def beta_vae_score(sample_pair_fn, factor_sizes, rng, batch_size: int = 64, num_train: int = 10000,
                   num_eval: int = 5000) -> dict:
    """BetaVAE score (Higgins et al. 2017) as in disentanglement_lib: test accuracy of a linear
    classifier predicting which factor was held fixed from mean |z1 - z2| over a batch of pairs.

    sample_pair_fn(factor_index, values) -> (codes1, codes2), each (len(values), num_codes): pair i
    shares factor `factor_index` = values[i] (drawn here uniformly), other factors independent.
    Classifier: scikit-learn's LogisticRegression with its defaults on the raw features, as the
    reference (today's defaults: lbfgs, multinomial; the reference ran an older scikit-learn
    whose default was liblinear, one-vs-rest). Sample sizes as disentanglement_lib's: batch 64, 10,000 train, 5,000 eval points.
    """
    sizes, rng = _check_factor_sizes(factor_sizes), _check_rng(rng)
    if batch_size < 1 or num_train < 2 or num_eval < 1:
        raise UserError("batch_size and num_eval must be >= 1, num_train >= 2")
    x_train, y_train = _beta_vae_points(sample_pair_fn, sizes, rng, batch_size, num_train)
    x_eval, y_eval = _beta_vae_points(sample_pair_fn, sizes, rng, batch_size, num_eval)
    if len(np.unique(y_train)) < 2:
        raise UserError("the BetaVAE score needs training points of at least 2 factors; "
                        "raise num_train")
    with warnings.catch_warnings():
        # scikit-learn's defaults, as the reference calls it: lbfgs may stop at its 100
        # iterations before it converges on the unscaled features, and says so every run
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(random_state=RANDOM_STATE).fit(x_train, y_train)
    return {"beta_vae": float(np.mean(model.predict(x_eval) == y_eval)),
            "beta_vae_train": float(np.mean(model.predict(x_train) == y_train))}


# ---------------------------------------------------------------- all five, from stored codes


def _varying_factors(factors_fit: np.ndarray, factors: np.ndarray):
    """Drop factors with a single value among the scored rows; map each factor's raw values to
    0..n-1, consistently in both sets."""
    keep = [k for k in range(factors.shape[1]) if len(np.unique(factors[:, k])) > 1]
    fit_out, out, sizes = [], [], []
    for k in keep:
        values = np.unique(np.concatenate([factors_fit[:, k], factors[:, k]]))
        fit_out.append(np.searchsorted(values, factors_fit[:, k]))
        out.append(np.searchsorted(values, factors[:, k]))
        sizes.append(len(values))
    return np.stack(fit_out, 1), np.stack(out, 1), sizes


def _subsample(n: int, at_most: int, seed: int) -> np.ndarray:
    """All of range(n) in order, or `at_most` of them drawn without replacement (sorted)."""
    if n <= at_most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, at_most, replace=False))


def scores_from_codes(codes_fit, factors_fit, codes, factors, seed: int = 0,
                      max_dci_points: int = 1000, workers: int = 1) -> dict:
    """MIG, SAP, DCI, FactorVAE and BetaVAE of a representation, from codes of stored images.

    codes/factors: held-out images' codes and ground-truth factor indices (scored);
    codes_fit/factors_fit: another held-out set, used to fit DCI's predictors. Factors with a
    single value in the data are left out. FactorVAE and BetaVAE draw their fixed-factor batches
    from the stored (codes, factors) rows (with replacement), so no image is encoded twice. Where
    disentanglement_lib samples the full factor grid afresh, these are the rows of the entity
    subset a split holds; DCI fits on at most `max_dci_points` of codes_fit and scores at most as
    many of codes (random rows, fixed by `seed`), which bounds the trees' time; `workers`
    threads fit them (the numbers do not depend on it).
    """
    fit_f, f, sizes = _varying_factors(np.asarray(factors_fit), np.asarray(factors))
    codes, codes_fit = np.asarray(codes, dtype=np.float64), np.asarray(codes_fit, np.float64)
    rng = np.random.default_rng(seed)
    # Fixed-factor batches may only use values that occur among the scored rows.
    present = [np.unique(f[:, k]) for k in range(f.shape[1])]
    rows_with = [[np.flatnonzero(f[:, k] == v) for v in values] for k, values in enumerate(present)]
    present_sizes = [len(values) for values in present]

    # rows of factor k sorted by value, and where each value's run of rows starts and how long
    by_value = [np.argsort(f[:, k], kind="stable") for k in range(f.shape[1])]
    starts = [np.searchsorted(f[order, k], present[k]) for k, order in enumerate(by_value)]
    counts = [np.array([len(rows) for rows in rows_with[k]]) for k in range(f.shape[1])]

    def sample(k, value, batch):
        if k is None:
            return codes[rng.integers(len(codes), size=batch)]
        rows = rows_with[k][value]
        return codes[rows[rng.integers(len(rows), size=batch)]]

    def rows_of(k, values):  # one random row whose factor k takes each of `values`
        offset = (rng.random(len(values)) * counts[k][values]).astype(np.int64)
        return by_value[k][starts[k][values] + offset]

    def sample_pair(k, values):
        return codes[rows_of(k, values)], codes[rows_of(k, values)]

    out = {}
    out.update(mig(codes, f))
    out.update(sap(codes, f))
    fit_rows = _subsample(len(codes_fit), max_dci_points, seed)
    scored_rows = _subsample(len(codes), max_dci_points, seed + 1)
    out.update(dci(codes_fit[fit_rows], fit_f[fit_rows], codes[scored_rows], f[scored_rows],
                   workers))
    out.update({k: v for k, v in factor_vae_score(sample, present_sizes, rng).items()
                if k == "factor_vae"})
    out.update({k: v for k, v in beta_vae_score(sample_pair, present_sizes, rng).items()
                if k == "beta_vae"})
    return out

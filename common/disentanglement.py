"""Supervised disentanglement metrics: MIG, SAP, DCI, FactorVAE and BetaVAE scores.

Definitions follow disentanglement_lib (Locatello et al. 2019) and are computed from arrays, so
any dataset can use them. Conventions, unlike disentanglement_lib (which stores one row per
dimension): `codes` is (num_points, num_codes) float, `factors` is (num_points, num_factors)
integer-valued ground-truth factors, one row per sample, rows drawn i.i.d.

Where disentanglement_lib trains a scikit-learn model (LinearSVC in SAP, gradient boosted trees in
DCI, LogisticRegression in BetaVAE) we fit a multinomial logistic regression in torch instead
(`_fit_softmax`); each docstring says so. Default sample sizes are small enough for a CPU test in
seconds; disentanglement_lib's are given beside them.
"""

import numpy as np
import torch

from common.errors import UserError

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


def _mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats from the contingency table of two label vectors (as sklearn's mutual_info_score)."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    na, nb = a.max() + 1, b.max() + 1
    joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb) / len(a)
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    # rounding can leave a tiny negative value for independent labels
    return max(float((joint[nz] * np.log(joint[nz] / outer[nz])).sum()), 0.0)


def mutual_info_matrix(codes_discrete: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Plug-in mutual information I(code_i; factor_j) in nats: (N, C), (N, F) -> (C, F).

    Computed from each pair's contingency table (disentanglement_lib's discrete_mutual_info).
    """
    codes_discrete = np.asarray(codes_discrete)
    codes_discrete = _check_discrete(codes_discrete, len(codes_discrete) if codes_discrete.ndim else -1,
                                     "codes_discrete")
    factors = _check_discrete(factors, codes_discrete.shape[0], "factors")
    return np.array([[_mutual_info(codes_discrete[:, i], factors[:, j])
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
    entropy = np.array([_mutual_info(f, f) for f in factors.T])
    if (entropy == 0).any():
        raise UserError(f"factors {np.flatnonzero(entropy == 0).tolist()} are constant; "
                        "MIG divides by their entropy")
    return {"mig": float(np.mean(_top_two_gap(info) / entropy))}


# ---------------------------------------------------------------- classifiers


def _fit_softmax(x, y, num_classes, l1=0.0, l2=1e-4, steps=500, balanced=False):
    """Multinomial logistic regression, full batch, by accelerated proximal gradient (FISTA).

    Minimises weighted mean cross-entropy + l2/2 |W|^2 + l1 |W|_1 (bias unpenalised); the
    proximal step is what makes the L1 term give exact zeros, which gradient methods (LBFGS,
    Adam) do not. balanced: weight samples inversely to class frequency (class_weight="balanced").
    x (N, D) float64 tensor, y (N,) long -> (weight (D, K), bias (K,)). Deterministic.
    """
    threads = torch.get_num_threads()
    # these problems are tiny: handing each op to a thread pool costs more than the op, and on a
    # busy machine the pool's waiting made a fit ~100x slower than one thread
    torch.set_num_threads(1)
    try:
        return _fista_softmax(x, y, num_classes, l1, l2, steps, balanced)
    finally:
        torch.set_num_threads(threads)


def _fista_softmax(x, y, num_classes, l1, l2, steps, balanced):
    """The FISTA iterations of `_fit_softmax`, step 1/L from a bound on the gradient's Lipschitz constant."""
    n, d = x.shape
    xb = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)  # (N, D+1): bias as a last feature
    onehot = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)
    counts = onehot.sum(0)
    sample_w = (n / (num_classes * counts.clamp(min=1)))[y] if balanced else torch.ones(n, dtype=x.dtype)
    # Lipschitz constant of the loss gradient: the softmax Hessian is at most 1/2 in every direction
    lip = 0.5 * float(sample_w.max()) * float(torch.linalg.eigvalsh(xb.T @ xb / n)[-1]) + l2
    step = 1.0 / lip
    params = torch.zeros(d + 1, num_classes, dtype=x.dtype)
    look, t = params.clone(), 1.0
    for _ in range(steps):
        resid = (torch.softmax(xb @ look, 1) - onehot) * sample_w[:, None]
        grad = xb.T @ resid / n
        grad[:d] += l2 * look[:d]
        new = look - step * grad
        new[:d] = torch.sign(new[:d]) * (new[:d].abs() - step * l1).clamp(min=0)
        t_next = 0.5 * (1 + (1 + 4 * t * t) ** 0.5)
        look = new + ((t - 1) / t_next) * (new - params)
        params, t = new, t_next
    return params[:d], params[d]


def _standardize(train: np.ndarray, test: np.ndarray):
    """Scale by the training mean and std; constant dimensions become 0 rather than NaN."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return (torch.as_tensor((train - mean) / std), torch.as_tensor((test - mean) / std))


def _encode_labels(train: np.ndarray, test: np.ndarray):
    """Class ids 0..K-1 from the training values; test values unseen in training get -1."""
    classes, train_ids = np.unique(train, return_inverse=True)
    pos = np.clip(np.searchsorted(classes, test), 0, len(classes) - 1)
    test_ids = np.where(classes[pos] == test, pos, -1)
    return len(classes), torch.as_tensor(train_ids), torch.as_tensor(test_ids)


def _balanced_accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over the classes present in y of the fraction predicted correctly."""
    return float(np.mean([float((pred[y == c] == c).double().mean()) for c in torch.unique(y)]))


# ---------------------------------------------------------------- SAP


def _train_test_split(n: int, test_fraction: float):
    # a fixed permutation, so that rows stored in grid order still give a fair split
    order = np.random.default_rng(0).permutation(n)
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n_test > n - 2:
        raise UserError(f"test_fraction={test_fraction} leaves no usable train/test split of {n} points")
    return order[n_test:], order[:n_test]


def _sap_classification(codes, factors, test_fraction, steps) -> np.ndarray:
    train, test = _train_test_split(len(codes), test_fraction)
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for j in range(factors.shape[1]):
        k, y_train, y_test = _encode_labels(factors[train, j], factors[test, j])
        for i in range(codes.shape[1]):
            x_train, x_test = _standardize(codes[train, i:i + 1], codes[test, i:i + 1])
            w, b = _fit_softmax(x_train, y_train, k, l2=1e-4, steps=steps, balanced=True)
            scores[i, j] = _balanced_accuracy((x_test @ w + b).argmax(1), y_test)
    return scores


def _sap_correlation(codes, factors) -> np.ndarray:
    """Squared Pearson correlation of every code with every factor, 0 for constant codes."""
    c = codes - codes.mean(0)
    f = factors - factors.mean(0)
    cov = c.T @ f / (len(codes) - 1)
    var_c, var_f = c.var(0, ddof=1), f.var(0, ddof=1)
    return np.where(var_c[:, None] > 1e-12, cov ** 2 / (np.outer(var_c, var_f) + 1e-300), 0.0)


def sap(codes: np.ndarray, factors: np.ndarray, continuous: bool = False,
        test_fraction: float = 1 / 3, steps: int = 300) -> dict:
    """Separated Attribute Predictability (Kumar et al. 2018): mean over factors of the gap
    between the two code dimensions that predict it best.

    Discrete factors (default): for every (code dim, factor) a 1-D classifier is trained on a
    train split and scored by balanced accuracy on the held-out split. The classifier is a
    class-balanced multinomial logistic regression on that one dimension (`_fit_softmax`, L2 1e-4,
    `steps` FISTA steps): like disentanglement_lib's class-balanced LinearSVC(C=0.01), an argmax of
    K linear functions of one variable, i.e. thresholds splitting the line into class intervals.
    disentanglement_lib uses 10,000 train / 5,000 test points (test_fraction 1/3) and reports plain
    test accuracy; for uniform factors the two agree in expectation. An uninformative dimension
    scores 1/K, so identity codes give SAP = mean(1 - 1/K), not 1.
    continuous=True: score = squared correlation of code and factor on all points, as
    disentanglement_lib.
    """
    codes = _check_codes(codes)
    factors = _check_discrete(factors, codes.shape[0], "factors")
    if codes.shape[1] < 2:
        raise UserError("SAP needs at least 2 code dimensions (it compares the top two)")
    if continuous:
        scores = _sap_correlation(codes, factors.astype(np.float64))
    else:
        scores = _sap_classification(codes, factors, test_fraction, steps)
    return {"sap": float(np.mean(_top_two_gap(scores)))}


# ---------------------------------------------------------------- DCI


def _normalised_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """Entropy of the distributions along `axis` (normalised there first), in base p.shape[axis]."""
    p = p / p.sum(axis=axis, keepdims=True)
    return -(p * np.log(p)).sum(axis=axis) / np.log(p.shape[axis])


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


def dci_importance(codes_train, factors_train, codes_test, factors_test,
                   l1: float = 1e-2, l2: float = 1e-3, steps: int = 500):
    """Importance matrix (num_codes, num_factors) and mean test accuracy of per-factor predictors.

    Substitute for disentanglement_lib's gradient boosted trees (no scikit-learn here): per factor,
    an elastic-net (L1 `l1`, L2 `l2`) multinomial logistic regression on codes standardised with
    the training statistics, fitted by `_fit_softmax` (deterministic); importance of a code = mean
    |weight| over classes, each factor's column scaled to sum to 1 as tree importances do. This is
    the linear (Lasso-style) DCI variant of Eastwood & Williams. Linear importances see only
    linear dependence, so values differ from disentanglement_lib's tree-based ones.
    """
    codes_train, codes_test = _check_codes(codes_train, "codes_train"), _check_codes(codes_test, "codes_test")
    factors_train = _check_discrete(factors_train, codes_train.shape[0], "factors_train")
    factors_test = _check_discrete(factors_test, codes_test.shape[0], "factors_test")
    if codes_train.shape[1] != codes_test.shape[1] or factors_train.shape[1] != factors_test.shape[1]:
        raise UserError(f"train and test shapes differ: codes {codes_train.shape[1]} vs "
                        f"{codes_test.shape[1]}, "
                        f"factors {factors_train.shape[1]} vs {factors_test.shape[1]}")
    x_train, x_test = _standardize(codes_train, codes_test)
    importance = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    accuracy = []
    for j in range(factors_train.shape[1]):
        k, y_train, y_test = _encode_labels(factors_train[:, j], factors_test[:, j])
        w, b = _fit_softmax(x_train, y_train, k, l1=l1, l2=l2, steps=steps)
        column = w.abs().mean(1).numpy()
        importance[:, j] = column / column.sum() if column.sum() > 0 else column
        accuracy.append(float(((x_test @ w + b).argmax(1) == y_test).double().mean()))
    return importance, float(np.mean(accuracy))


def dci(codes_train, factors_train, codes_test, factors_test, l1: float = 1e-2, l2: float = 1e-3,
        steps: int = 500) -> dict:
    """DCI (Eastwood & Williams 2018): disentanglement, completeness, informativeness.

    Importances and informativeness (mean over factors of test accuracy) from `dci_importance`,
    a logistic-regression substitute for disentanglement_lib's gradient boosted trees; D and C
    from `dci_disentanglement` / `dci_completeness`. disentanglement_lib: 10,000 train / 5,000 test.
    """
    importance, informativeness = dci_importance(codes_train, factors_train, codes_test, factors_test,
                                                 l1=l1, l2=l2, steps=steps)
    return {"dci_disentanglement": dci_disentanglement(importance),
            "dci_completeness": dci_completeness(importance),
            "dci_informativeness": informativeness}


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


def factor_vae_score(sample_fn, factor_sizes, rng, batch_size: int = 64, num_train: int = 500,
                     num_eval: int = 300, num_variance_estimate: int = 2000,
                     prune_threshold: float = 0.05) -> dict:
    """FactorVAE score (Kim & Mnih 2018) as in disentanglement_lib.

    sample_fn(factor_index, value, batch) -> codes (batch, num_codes) of points whose factor
    `factor_index` equals `value` and whose other factors are random; sample_fn(None, None, n) ->
    codes of n points with every factor random. Each vote: fix a uniformly drawn factor at a
    uniformly drawn value, take the code dimension of least variance divided by its global variance
    (dims with global std < prune_threshold are dropped). The classifier is the majority vote
    (factor per dimension) on num_train votes; the score is its accuracy on num_eval fresh votes.
    No active dimension scores 0, as disentanglement_lib. Defaults here: batch 64, 500 train,
    300 eval, 2,000 points for the global variance; disentanglement_lib: 64, 10,000, 5,000, 10,000.
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


def beta_vae_score(sample_pair_fn, factor_sizes, rng, batch_size: int = 64, num_train: int = 1000,
                   num_eval: int = 500, l2: float = 1e-4, steps: int = 500) -> dict:
    """BetaVAE score (Higgins et al. 2017) as in disentanglement_lib: test accuracy of a linear
    classifier predicting which factor was held fixed from mean |z1 - z2| over a batch of pairs.

    sample_pair_fn(factor_index, values) -> (codes1, codes2), each (len(values), num_codes): pair i
    shares factor `factor_index` = values[i] (drawn here uniformly), other factors independent.
    Classifier: multinomial logistic regression (L2 `l2`, standardised features, full-batch
    `_fit_softmax`) in place of disentanglement_lib's scikit-learn LogisticRegression. Defaults:
    batch 64, 1,000 train, 500 eval points; disentanglement_lib: 64, 10,000, 5,000.
    """
    sizes, rng = _check_factor_sizes(factor_sizes), _check_rng(rng)
    if batch_size < 1 or num_train < 2 or num_eval < 1:
        raise UserError("batch_size and num_eval must be >= 1, num_train >= 2")
    x_train, y_train = _beta_vae_points(sample_pair_fn, sizes, rng, batch_size, num_train)
    x_eval, y_eval = _beta_vae_points(sample_pair_fn, sizes, rng, batch_size, num_eval)
    x_train, x_eval = _standardize(x_train, x_eval)
    y_train, y_eval = torch.as_tensor(y_train), torch.as_tensor(y_eval)
    w, b = _fit_softmax(x_train, y_train, len(sizes), l2=l2, steps=steps)
    return {"beta_vae": float(((x_eval @ w + b).argmax(1) == y_eval).double().mean()),
            "beta_vae_train": float(((x_train @ w + b).argmax(1) == y_train).double().mean())}


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


def scores_from_codes(codes_fit, factors_fit, codes, factors, seed: int = 0) -> dict:
    """MIG, SAP, DCI, FactorVAE and BetaVAE of a representation, from codes of stored images.

    codes/factors: held-out images' codes and ground-truth factor indices (scored);
    codes_fit/factors_fit: another held-out set, used to fit DCI's predictors. Factors with a
    single value in the data are left out. FactorVAE and BetaVAE draw their fixed-factor batches
    from the stored (codes, factors) rows (with replacement), so no image is encoded twice.
    """
    fit_f, f, sizes = _varying_factors(np.asarray(factors_fit), np.asarray(factors))
    codes, codes_fit = np.asarray(codes, dtype=np.float64), np.asarray(codes_fit, np.float64)
    rng = np.random.default_rng(seed)
    # Fixed-factor batches may only use values that occur among the scored rows.
    present = [np.unique(f[:, k]) for k in range(f.shape[1])]
    rows_with = [[np.flatnonzero(f[:, k] == v) for v in values] for k, values in enumerate(present)]
    present_sizes = [len(values) for values in present]

    def sample(k, value, batch):
        if k is None:
            return codes[rng.integers(len(codes), size=batch)]
        rows = rows_with[k][value]
        return codes[rows[rng.integers(len(rows), size=batch)]]

    def sample_pair(k, values):
        return (np.stack([sample(k, v, 1)[0] for v in values]),
                np.stack([sample(k, v, 1)[0] for v in values]))

    out = {}
    out.update(mig(codes, f))
    out.update(sap(codes, f))
    out.update(dci(codes_fit, fit_f, codes, f))
    out.update({k: v for k, v in factor_vae_score(sample, present_sizes, rng).items()
                if k == "factor_vae"})
    out.update({k: v for k, v in beta_vae_score(sample_pair, present_sizes, rng).items()
                if k == "beta_vae"})
    return out

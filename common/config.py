"""Config handling: a dataset's config is a plain nested dict; the command line overrides it.

    python dsprites/train.py train.relational_epochs=5 model.z_dim=10 data.path=/data/dsprites.npz

Every override must name an existing key (dotted path) and parse to the type of the default
value. Mistakes raise UserError naming the key and, for typos, the nearest valid key.
"""

import copy
import difflib
import json

from common.errors import UserError


def flatten(cfg: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}. Lists are leaves."""
    flat = {}
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _nearest(key: str, candidates) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.0)
    return f"; did you mean '{close[0]}'?" if close else ""


def parse_value(key: str, text: str, default):
    """Parse command-line text to the type of `default` (bool, int, float, str, list, dict)."""
    expected = type(default).__name__
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise UserError(f"config key '{key}' expects a bool (true/false), got '{text}'")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise UserError(f"config key '{key}' expects an int, got '{text}'") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise UserError(f"config key '{key}' expects a float, got '{text}'") from None
    if isinstance(default, str):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise UserError(
            f"config key '{key}' expects a {expected} written as JSON (e.g. [1, 2]), got '{text}'"
        ) from None
    if not isinstance(value, type(default)):
        raise UserError(f"config key '{key}' expects a {expected}, got '{text}'")
    return value


def _set(cfg: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value


def apply_overrides(defaults: dict, overrides: list[str]) -> dict:
    """Return a copy of `defaults` with each 'dotted.key=value' override applied and type-checked."""
    cfg = copy.deepcopy(defaults)
    valid = flatten(defaults)
    for item in overrides:
        if "=" not in item:
            raise UserError(
                f"cannot read override '{item}': write it as key=value, e.g. train.relational_epochs=5"
            )
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in valid:
            raise UserError(f"unknown config key '{key}'{_nearest(key, valid)}")
        _set(cfg, key, parse_value(key, text, valid[key]))
    return cfg


# Keys added after runs were first made, with the value that reproduces what those runs did;
# `upgrade` fills them into an older run's config.json so it can still be resumed or evaluated.
ADDED_KEYS = {"prior.pooling": 0.0, "train.rel_noise": "independent",
              "eval.classifier_steps": 1500, "train.sup_loss": "nll",
              "data.labelled_mirror_prob": 0.0, "train.rel_codes": False,
              "train.lr_decay_epochs": 0}


def upgrade(cfg: dict) -> dict:
    """A run's saved config with any ADDED_KEYS it predates filled in (a copy)."""
    cfg = copy.deepcopy(cfg)
    flat = flatten(cfg)
    for key, value in ADDED_KEYS.items():
        if key not in flat:
            _set(cfg, key, value)
    return cfg


def check_types(cfg: dict, defaults: dict) -> None:
    """Check that a (possibly hand-edited) config has the keys and types of the defaults."""
    flat, valid = flatten(cfg), flatten(defaults)
    for key in flat:
        if key not in valid:
            raise UserError(f"unknown config key '{key}'{_nearest(key, valid)}")
    for key, default in valid.items():
        if key not in flat:
            raise UserError(f"config is missing key '{key}'")
        value = flat[key]
        ok = isinstance(value, type(default))
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, bool):
            ok = False
        if not ok:
            raise UserError(
                f"config key '{key}' expects a {type(default).__name__}, "
                f"got {type(value).__name__} {value!r}"
            )


def validate_method(cfg: dict) -> None:
    """Range checks of the sections every dataset shares (run, train, prior, model, eval) that
    the type checker cannot do; raises UserError naming the key."""
    train, model, prior, ev = cfg["train"], cfg["model"], cfg["prior"], cfg["eval"]
    for key in ("warmup_epochs", "relational_epochs", "lr_decay_epochs"):
        if train[key] < 0:
            raise UserError(f"train.{key} must be >= 0, got {train[key]}")
    for key in ("batch_size", "labelled_batch_size", "rel_batch_size", "rel_steps"):
        if train[key] < 1:
            raise UserError(f"train.{key} must be >= 1, got {train[key]}")
    for key in ("lr", "disc_lr", "rel_lr"):
        if train[key] <= 0:
            raise UserError(f"train.{key} must be > 0, got {train[key]}")
    choices = {"train.amp": ("auto", "bf16", "off"), "train.rel_loss": ("mse", "nll", "xent"),
               "train.sup_loss": ("nll", "nll+xent"),
               "train.rel_noise": ("independent", "matched"),
               "prior.warmup": ("normal", "uniform")}
    for dotted, allowed in choices.items():
        section, key = dotted.split(".")
        if cfg[section][key] not in allowed:
            raise UserError(f"{dotted} must be one of {', '.join(allowed)}, got "
                            f"'{cfg[section][key]}'")
    for key in ("means_lr", "gm_cov"):
        if prior[key] <= 0:
            raise UserError(f"prior.{key} must be > 0, got {prior[key]}")
    if not 0.0 <= prior["pooling"] <= 1.0:
        raise UserError(f"prior.pooling must be in [0, 1], got {prior['pooling']}")
    if model["z_dim"] < 1 or len(model["channels"]) != 4 or min(model["channels"]) < 1:
        raise UserError("model.z_dim must be >= 1 and model.channels four positive widths")
    if cfg["run"]["eval_every"] < 1:
        raise UserError(f"run.eval_every must be >= 1, got {cfg['run']['eval_every']}")
    for key in ("rel_samples", "classifier_steps"):
        if ev[key] < 1:
            raise UserError(f"eval.{key} must be >= 1, got {ev[key]}")


def validate_factors(cfg: dict, dataset: str, factor_names, factor_sizes) -> None:
    """Every factor is either an entity factor (entities.bins) or a nuisance (data.nuisances)
    with at least one valid value index."""
    bins, nuisances = cfg["entities"]["bins"], cfg["data"]["nuisances"]
    for name in list(bins) + list(nuisances):
        if name not in factor_names:
            raise UserError(f"'{name}' is not a {dataset} factor; choose from {list(factor_names)}")
    for name, size in zip(factor_names, factor_sizes):
        if (name in bins) == (name in nuisances):
            raise UserError(
                f"factor '{name}' must appear exactly once: in entities.bins or data.nuisances"
            )
        for idx in nuisances.get(name, []):
            if not 0 <= idx < size:
                raise UserError(f"data.nuisances.{name} index {idx} is outside 0..{size - 1}")
        if name in nuisances and not nuisances[name]:
            raise UserError(f"data.nuisances.{name} is empty; list at least one index")


def validate_augment(cfg: dict) -> None:
    """The input augmentation settings of data.* (noise, masking, mirroring)."""
    data = cfg["data"]
    for key in ("noise_prob", "noise_rate", "mask_prob", "labelled_mirror_prob"):
        if not 0.0 <= data[key] <= 1.0:
            raise UserError(f"data.{key} must be in [0, 1], got {data[key]}")
    if not 1 <= data["mask_size"] <= 64:
        raise UserError(f"data.mask_size must be in 1..64, got {data['mask_size']}")

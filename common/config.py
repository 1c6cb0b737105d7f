"""Config handling: a dataset's config is a plain nested dict; the command line overrides it.

    python dsprites/train.py train.relational_epochs=5 model.z_dim=10 data.path=/data/dsprites.npz

Every override must name an existing key (dotted path) and parse to the type of the default
value. Mistakes raise UserError naming the key and, for typos, the nearest valid key.
"""

import copy
import difflib
import json
import math

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
              "train.lr_decay_epochs": 0, "run.tensorboard": False,
              "train.checkpoint_every_s": 0.0, "train.recon_object_weight": 0.0,
              "prior.kind": "entity", "prior.blocks": [],
              "prior.refit_every": 0, "prior.calibrate_epochs": 0,
              "prior.calibrate_images": 10000, "model.norm": "none",
              "data.labelled_shift": 0, "prior.free_dims": 0,
              "data.labelled_per_bin": 0, "train.consistency_weight": 0.0,
              "train.leak_weight": 0.0, "train.indep_weight": 0.0,
              "train.pseudo_per_entity": 0, "train.pseudo_after": 2,
              "data.background_swap_prob": 0.0, "train.invariance_weight": 0.0,
              "train.pseudo_source": "mixture", "train.pseudo_neighbours": 10,
              "train.pseudo_alpha": 0.2}

# train.compile's values: off, or the torch.compile mode the networks are compiled in
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def upgrade(cfg: dict) -> dict:
    """A run's saved config with any ADDED_KEYS it predates filled in (a copy), and keys whose
    form changed since written in today's form."""
    cfg = copy.deepcopy(cfg)
    train = cfg.get("train", {})
    # until 2026-12-08 train.compile was a bool, with the mode in a key of its own
    if isinstance(train.get("compile"), bool):
        mode = train.pop("compile_mode", "default")
        train["compile"] = mode if train["compile"] else "off"
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


POSITIVE = math.ulp(0.0)  # a lowest value in check_ranges that means "> 0"


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> str:
    return str(value) if is_int(value) else f"{value:g}"


def check_ranges(cfg: dict, ranges: dict) -> None:
    """Each dotted key of ranges {key: (lowest, highest)} holds a finite number in that range."""
    flat = flatten(cfg)
    for key, (low, high) in ranges.items():
        value = flat[key]
        if not ((is_int(value) or math.isfinite(value)) and low <= value <= high):
            lowest = "> 0" if low == POSITIVE else f">= {_number(low)}"
            raise UserError(f"{key} must be {lowest} and <= {_number(high)}, got {value}")


def validate_factors(cfg: dict, dataset: str, factor_names, factor_sizes) -> None:
    """Every factor is either an entity factor (entities.bins: lists of integer indices) or a
    nuisance (data.nuisances: distinct integer indices, at least one); the relations are a
    non-empty list of {name, factor, step, cyclic} with distinct names and integer steps."""
    bins, nuisances = cfg["entities"]["bins"], cfg["data"]["nuisances"]
    for name in list(bins) + list(nuisances):
        if name not in factor_names:
            raise UserError(f"'{name}' is not a {dataset} factor; choose from {list(factor_names)}")
    for name, size in zip(factor_names, factor_sizes):
        if (name in bins) == (name in nuisances):
            raise UserError(
                f"factor '{name}' must appear exactly once: in entities.bins or data.nuisances"
            )
        if name in bins and not (isinstance(bins[name], list) and all(
                isinstance(b, list) and all(is_int(i) for i in b) for b in bins[name])):
            raise UserError(f"entities.bins.{name} must be a list of bins, each a list of "
                            f"integer indices (e.g. [[0, 1], [2]]), got {bins[name]}")
        if name not in nuisances:
            continue
        values = nuisances[name]
        if not values:
            raise UserError(f"data.nuisances.{name} is empty; list at least one index")
        for idx in values:
            if not is_int(idx):
                raise UserError(f"data.nuisances.{name} must list integer indices, got {idx!r}")
            if not 0 <= idx < size:
                raise UserError(f"data.nuisances.{name} index {idx} is outside 0..{size - 1}")
        if len(set(values)) != len(values):  # a repeated index would repeat its images
            raise UserError(f"data.nuisances.{name} lists an index twice: {values}")
    _validate_relations(cfg["entities"]["relations"])


def _validate_relations(relations) -> None:
    keys = {"name": str, "factor": str, "step": int, "cyclic": bool}
    if not isinstance(relations, list) or not relations:
        raise UserError("entities.relations must list at least one relation, e.g. "
                        '[{"name": "right", "factor": "posX", "step": 1, "cyclic": false}]')
    names = []
    for rel in relations:
        if not isinstance(rel, dict) or set(rel) != set(keys) or not all(
                isinstance(rel[k], t) and (t is bool or not isinstance(rel[k], bool))
                for k, t in keys.items()):
            raise UserError(f"each relation must be {{name: text, factor: text, step: integer, "
                            f"cyclic: true/false}}, got {rel}")
        if not rel["name"] or not 1 <= abs(rel["step"]) <= 1000:
            raise UserError(f"relation {rel} needs a name and a step of 1..1000 bins either way")
        names.append(rel["name"])
    if len(set(names)) != len(names):
        raise UserError(f"entities.relations has two relations of one name: {names}")


def resolve(defaults: dict, presets: dict, preset: str | None, overrides: list[str]) -> dict:
    """The config of a new run: the defaults, then the named preset, then the overrides."""
    if preset is not None and preset not in presets:
        raise UserError(f"unknown preset '{preset}'; choose from {sorted(presets)}")
    chosen = presets.get(preset, {}) if preset is not None else {}
    as_text = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in chosen.items()]
    return apply_overrides(apply_overrides(defaults, as_text), overrides)


def saved(run_config: dict, defaults: dict) -> dict:
    """A run's saved config.json, upgraded and checked against today's keys and types."""
    cfg = upgrade(run_config)
    check_types(cfg, defaults)
    return cfg

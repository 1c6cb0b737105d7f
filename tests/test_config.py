"""common.config overrides and type checks (with the dSprites CONFIG), every folder's
config.validate, splits and the labelled budget."""
import copy
import itertools
import json

import numpy as np
import pytest

from common import config as configlib
from common.data import labelled_per_bin, labelled_subset, split_indices
from common.errors import UserError
from common.schedule import lr_factor
from dsprites import dataset as ds
from dsprites.config import CONFIG, PRESETS, validate
from mpi3d.config import CONFIG as MPI3D
from shapes3d.config import CONFIG as SHAPES3D
from tests.scripts import FOLDERS, module

PRISTINE = json.dumps(CONFIG, sort_keys=True)


def _apply(*overrides):
    return configlib.apply_overrides(CONFIG, list(overrides))


@pytest.fixture(autouse=True)
def _defaults_never_mutated():
    yield
    assert json.dumps(CONFIG, sort_keys=True) == PRISTINE


# ---------------------------------------------------------------- flatten


def test_flatten_dotted_leaves():
    flat = configlib.flatten(CONFIG)
    assert flat["model.z_dim"] == 10
    assert flat["entities.bins.posX"] == CONFIG["entities"]["bins"]["posX"]
    assert flat["data.nuisances.orientation"] == [0, 1, 2, 37, 38, 39]
    assert isinstance(flat["entities.relations"], list)  # lists are leaves
    assert "entities.bins" not in flat and "model" not in flat
    assert configlib.flatten({"a": {"b": {"c": 1}}, "d": {}}) == {"a.b.c": 1, "d": {}}


# ---------------------------------------------------------------- apply_overrides


def test_override_each_type():
    cfg = _apply(
        "model.z_dim=7",
        "train.lr=0.25",
        "train.disc_lr=1e-3",
        "train.rel_lr=5",  # int text for a float key
        "prior.learn_means=false",
        "run.name=my run=1",  # '=' after the first belongs to the value
        "data.split=[0.6, 0.2, 0.2]",
        "entities.bins.posX=[[0,1],[30,31]]",
    )
    assert cfg["model"]["z_dim"] == 7 and type(cfg["model"]["z_dim"]) is int
    assert cfg["train"]["lr"] == 0.25 and type(cfg["train"]["lr"]) is float
    assert cfg["train"]["disc_lr"] == 1e-3
    assert cfg["train"]["rel_lr"] == 5.0 and type(cfg["train"]["rel_lr"]) is float
    assert cfg["prior"]["learn_means"] is False
    assert cfg["run"]["name"] == "my run=1"
    assert cfg["data"]["split"] == [0.6, 0.2, 0.2]
    assert cfg["entities"]["bins"]["posX"] == [[0, 1], [30, 31]]
    # everything else equals the defaults
    changed = {"model.z_dim", "train.lr", "train.disc_lr", "train.rel_lr", "prior.learn_means",
               "run.name", "data.split", "entities.bins.posX"}
    flat, base = configlib.flatten(cfg), configlib.flatten(CONFIG)
    assert flat.keys() == base.keys()
    assert {k for k in base if flat[k] != base[k]} == changed - {"train.disc_lr"}
    assert cfg["entities"]["bins"]["posY"] == CONFIG["entities"]["bins"]["posY"]
    # the result shares no mutable state with the defaults
    cfg["entities"]["bins"]["posY"][0].append(99)
    cfg["entities"]["relations"][0]["step"] = 5
    assert CONFIG["entities"]["bins"]["posY"][0] == [0, 1, 2, 3, 4]
    assert CONFIG["entities"]["relations"][0]["step"] == -1


@pytest.mark.parametrize("text,expected", [("true", True), ("false", False), ("True", True),
                                           ("FALSE", False), (" on ", True), ("0", False)])
def test_override_bool(text, expected):
    assert _apply(f"prior.learn_means={text}")["prior"]["learn_means"] is expected


def test_later_override_wins_and_no_override_is_a_copy():
    assert _apply("model.z_dim=3", "model.z_dim=4")["model"]["z_dim"] == 4
    cfg = _apply()
    assert cfg == CONFIG and cfg is not CONFIG and cfg["model"] is not CONFIG["model"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_presets_apply_cleanly(folder):
    config = module(folder, "config")
    assert {"paper", "tiny"} <= set(config.PRESETS)
    for name, preset in config.PRESETS.items():
        cfg = configlib.resolve(config.CONFIG, config.PRESETS, name, [])
        flat = configlib.flatten(cfg)
        for key, value in preset.items():
            assert flat[key] == value, (name, key)
        config.validate(cfg)


def test_unknown_preset_names_the_choices():
    choices = r"\['labels1', 'paper', 'plain', 'tiny'\]"  # dSprites' presets
    with pytest.raises(UserError, match=r"unknown preset 'papr'; choose from " + choices):
        configlib.resolve(CONFIG, PRESETS, "papr", [])


def test_overrides_win_over_the_preset():
    cfg = configlib.resolve(CONFIG, PRESETS, "tiny", ["train.batch_size=32"])
    assert cfg["train"]["batch_size"] == 32 and cfg["model"]["hidden"] == 64


@pytest.mark.parametrize("key,nearest", [
    ("model.zdim", "model.z_dim"),
    ("train.batchsize", "train.batch_size"),
    ("prior.gmcov", "prior.gm_cov"),
])
def test_unknown_key_names_nearest(key, nearest):
    with pytest.raises(UserError, match=rf"unknown config key '{key}'.*did you mean '{nearest}'"):
        _apply(f"{key}=1")


def test_unknown_key_suggests_a_train_key():
    with pytest.raises(UserError) as err:
        _apply("train.epoch=3")
    msg = str(err.value)
    assert "unknown config key 'train.epoch'" in msg
    suggested = msg.split("did you mean '")[1].split("'")[0]
    assert suggested.startswith("train.") and suggested in configlib.flatten(CONFIG)
    assert "epochs" in suggested


def test_parent_key_is_not_a_leaf():
    with pytest.raises(UserError, match="unknown config key 'entities.bins'"):
        _apply('entities.bins={"shape": [[0]]}')


@pytest.mark.parametrize("override,key,kind", [
    ("model.z_dim=ten", "model.z_dim", "int"),
    ("model.z_dim=2.5", "model.z_dim", "int"),
    ("train.lr=abc", "train.lr", "float"),
    ("prior.learn_means=maybe", "prior.learn_means", "bool"),
    ("data.split=[0.8", "data.split", "list"),
    ('data.split={"a": 1}', "data.split", "list"),
    ("data.split=0.8", "data.split", "list"),
    ("entities.bins.posX=[[0,1],[30,31]", "entities.bins.posX", "list"),
])
def test_wrong_type_names_the_key(override, key, kind):
    with pytest.raises(UserError, match=rf"config key '{key}' expects an? {kind}"):
        _apply(override)


def test_missing_equals_sign():
    with pytest.raises(UserError, match=r"cannot read override 'model.z_dim'.*key=value"):
        _apply("model.z_dim")


# ---------------------------------------------------------------- check_types


def _edited():
    return copy.deepcopy(CONFIG)


def test_check_types_accepts_defaults_and_json_round_trip():
    configlib.check_types(_edited(), CONFIG)
    configlib.check_types(json.loads(json.dumps(CONFIG)), CONFIG)
    cfg = _edited()
    cfg["train"]["lr"] = 1  # an int where a float is expected is fine (JSON writes 1.0 as 1)
    configlib.check_types(cfg, CONFIG)


def test_check_types_extra_key():
    cfg = _edited()
    cfg["train"]["epochs"] = 5
    with pytest.raises(UserError, match=r"unknown config key 'train.epochs'.*did you mean 'train\."):
        configlib.check_types(cfg, CONFIG)


def test_check_types_missing_key():
    cfg = _edited()
    del cfg["model"]["hidden"]
    with pytest.raises(UserError, match="config is missing key 'model.hidden'"):
        configlib.check_types(cfg, CONFIG)
    cfg = _edited()
    del cfg["eval"]
    with pytest.raises(UserError, match=r"config is missing key 'eval\."):
        configlib.check_types(cfg, CONFIG)


def test_upgrade_fills_only_keys_added_after_a_run_was_made():
    cfg = _edited()
    del cfg["prior"]["pooling"], cfg["train"]["rel_noise"], cfg["eval"]["classifier_steps"]
    del cfg["train"]["leak_weight"], cfg["train"]["indep_weight"]  # the latest keys
    upgraded = configlib.upgrade(cfg)
    configlib.check_types(upgraded, CONFIG)
    assert upgraded["prior"]["pooling"] == 0.0 and upgraded["train"]["rel_noise"] == "independent"
    assert upgraded["train"]["leak_weight"] == upgraded["train"]["indep_weight"] == 0.0
    assert "pooling" not in cfg["prior"]  # the saved config itself is left as it was
    del upgraded["model"]["hidden"]
    with pytest.raises(UserError, match="config is missing key 'model.hidden'"):
        configlib.check_types(configlib.upgrade(upgraded), CONFIG)
    for dataset_config in (CONFIG, MPI3D, SHAPES3D):  # every key added is a real key
        assert set(configlib.ADDED_KEYS) <= set(configlib.flatten(dataset_config))


@pytest.mark.parametrize("saved,mode", [
    ({"compile": False}, "off"), ({"compile": True}, "default"),
    ({"compile": False, "compile_mode": "max-autotune"}, "off"),
    ({"compile": True, "compile_mode": "reduce-overhead"}, "reduce-overhead")])
def test_upgrade_writes_a_boolean_compile_of_older_runs_as_its_mode(saved, mode):
    cfg = _edited()
    del cfg["train"]["compile"]
    cfg["train"].update(saved)
    upgraded = configlib.upgrade(cfg)
    configlib.check_types(upgraded, CONFIG)
    assert upgraded["train"]["compile"] == mode and "compile_mode" not in upgraded["train"]
    assert cfg["train"]["compile"] is saved["compile"]  # the saved config is left as it was


@pytest.mark.parametrize("section,key,value,kind", [
    ("model", "z_dim", "10", "int"),
    ("model", "z_dim", 10.0, "int"),
    ("model", "z_dim", True, "int"),  # bool is an int subclass, but not an int here
    ("train", "lr", "0.001", "float"),
    ("train", "lr", False, "float"),
    ("prior", "learn_means", 1, "bool"),
    ("data", "split", "0.8,0.1,0.1", "list"),
    ("run", "name", None, "str"),
])
def test_check_types_wrong_type(section, key, value, kind):
    cfg = _edited()
    cfg[section][key] = value
    with pytest.raises(UserError, match=rf"config key '{section}.{key}' expects an? {kind}"):
        configlib.check_types(cfg, CONFIG)


# ---------------------------------------------------------------- dsprites validate


@pytest.mark.parametrize("folder", FOLDERS)
def test_validate_accepts_defaults(folder):
    config = module(folder, "config")
    config.validate(copy.deepcopy(config.CONFIG))


# The method's keys are the same in every folder; each folder's validate must refuse these.
METHOD_REJECTS = [
    ("train.warmup_epochs=-1", r"train.warmup_epochs must be >= 0 and <= 1000000, got -1"),
    ("train.relational_epochs=-3", r"train.relational_epochs must be >= 0"),
    ("train.lr_decay_epochs=-1", r"train.lr_decay_epochs must be >= 0 and <= 1000000, got -1"),
    ("train.batch_size=0", r"train.batch_size must be >= 1"),
    ("train.rel_lr=0", r"train.rel_lr must be > 0"),
    ("train.rel_loss=l1", r"train.rel_loss must be one of mse, nll, xent, got 'l1'"),
    ("train.sup_loss=xent", r"train.sup_loss must be one of nll, nll\+xent, got 'xent'"),
    ("train.pseudo_source=knn", r"train.pseudo_source must be one of mixture, graph, got 'knn'"),
    ("train.compile=fast",
     r"train.compile must be one of off, default, reduce-overhead, max-autotune, got 'fast'"),
    ("train.compile=true",  # a bool until 2026-12-08: the mode is named now
     r"train.compile must be one of off, default, reduce-overhead, max-autotune, got 'true'"),
    ("train.pseudo_neighbours=0", r"train.pseudo_neighbours must be >= 1 and <= 10000, got 0"),
    ("train.pseudo_alpha=1", r"train.pseudo_alpha must be > 0 and <= 0.999, got 1"),
    ("data.labelled_mirror_prob=1.5", r"data.labelled_mirror_prob must be in \[0, 1\]"),
    ("data.labelled_shift=33", r"data.labelled_shift must be in 0..32 pixels, got 33"),
    ("data.labelled_shift=-1", r"data.labelled_shift must be in 0..32 pixels, got -1"),
    ("prior.warmup=cauchy", r"prior.warmup"),
    ("prior.gm_cov=-0.5", r"prior.gm_cov must be > 0"),
    ("model.z_dim=0", r"model.z_dim"),
    ("model.channels=[32, 32, 64]", r"model.channels"),
    ("data.noise_prob=1.5", r"data.noise_prob must be in \[0, 1\]"),
    ("data.mask_size=65", r"data.mask_size"),
    ("run.eval_every=0", r"run.eval_every"),
    ("eval.rel_samples=0", r"eval.rel_samples"),
    # NaN passes `<= 0` checks; every number is checked finite and in range at start-up
    ("train.lr=nan", r"train.lr must be > 0 and <= 10, got nan"),
    ("train.disc_lr=inf", r"train.disc_lr must be > 0"),
    ("prior.gm_cov=nan", r"prior.gm_cov must be > 0"),
    ("prior.gm_cov=1e300", r"prior.gm_cov must be > 0 and <= 1e\+06"),
    ("prior.min_separation=nan", r"prior.min_separation"),
    ("prior.means_lr=nan", r"prior.means_lr"),
    ("train.sup_weight=nan", r"train.sup_weight must be >= 0"),
    ("train.adv_weight=-1", r"train.adv_weight must be >= 0"),
    ("prior.calibrate_images=0", r"prior.calibrate_images must be >= 1"),
    ("prior.calibrate_epochs=-1", r"prior.calibrate_epochs must be >= 0"),
    ("train.checkpoint_every_s=nan", r"train.checkpoint_every_s"),
    ("train.batch_size=100000000000000000000000", r"train.batch_size must be >= 1 and <= 1048576"),
    ("train.batch_size=1" + "0" * 400, r"train.batch_size must be >= 1"),  # beyond any float
    ("eval.rel_samples=1000000000", r"eval.rel_samples must be >= 1 and <= 100000"),
    ("eval.q=1.5", r"eval.q must be > 0 and <= 1"),
    ("eval.q=nan", r"eval.q must be > 0"),
    ("eval.q=0", r"eval.q must be > 0"),
    ("eval.qs=[]", r"eval.qs must be confidences in \(0, 1\] and include 0.99"),
    ("eval.qs=[0.5, 0.9]", r"include 0.99"),
    ("eval.qs=[0.99, 1.5]", r"eval.qs"),
    ("eval.qs=[0.99, NaN]", r"eval.qs"),
    ("run.seed=-1", r"run.seed must be >= 0 and <= 4294967295, got -1"),
    ("run.seed=4294967296", r"run.seed must be >= 0 and <= 4294967295"),
    ("run.threads=-1", r"run.threads must be >= 0"),
    ("run.device=meta", r"run.device must be auto, cpu, cuda or cuda:N, got 'meta'"),
    ("model.z_dim=1", r"model.z_dim must be >= 2"),
    ("model.z_dim=100000", r"model.z_dim must be >= 2 and <= 4096"),
    ("model.hidden=0", r"model.hidden must be >= 1"),
    ("model.disc_hidden=-5", r"model.disc_hidden must be >= 1"),
    ("model.rel_hidden=-1", r"model.rel_hidden must be >= 1"),
    ("entities.relations=[]", r"entities.relations must list at least one relation"),
    ('entities.relations=[{"name": "x", "step": 1, "cyclic": true}]', r"each relation must be"),
    ('entities.relations=[{"name": "x", "factor": "f", "step": "1", "cyclic": true}]',
     r"each relation must be"),
    ('entities.relations=[{"name": "x", "factor": "f", "step": 1.5, "cyclic": true}]',
     r"each relation must be"),
    ('entities.relations=[{"name": "x", "factor": "f", "step": 100000000000000000000, '
     '"cyclic": true}]', r"a step of 1..1000 bins"),
    ('entities.relations=[{"name": "x", "factor": "f", "step": 1, "cyclic": true}, '
     '{"name": "x", "factor": "f", "step": -1, "cyclic": true}]', r"two relations of one name"),
]


@pytest.mark.parametrize("folder", FOLDERS)
@pytest.mark.parametrize("bins", ["[0, 1, 2]", '[["a"]]', "[[0.5]]", "[[true]]"])
def test_every_folder_refuses_bins_that_are_not_lists_of_integer_indices(folder, bins):
    config = module(folder, "config")
    name = next(iter(config.CONFIG["entities"]["bins"]))
    cfg = configlib.apply_overrides(config.CONFIG, [f"entities.bins.{name}={bins}"])
    with pytest.raises(UserError, match=rf"entities.bins.{name} must be a list of bins"):
        config.validate(cfg)


@pytest.mark.parametrize("folder", FOLDERS)
@pytest.mark.parametrize("values,pattern", [("[2.5]", "must list integer indices, got 2.5"),
                                            ("[0, 0]", "lists an index twice")])
def test_every_folder_refuses_fractional_or_repeated_nuisance_indices(folder, values, pattern):
    config = module(folder, "config")
    name = next(iter(config.CONFIG["data"]["nuisances"]))
    cfg = configlib.apply_overrides(config.CONFIG, [f"data.nuisances.{name}={values}"])
    with pytest.raises(UserError, match=rf"data.nuisances.{name} {pattern}"):
        config.validate(cfg)


@pytest.mark.parametrize("folder", FOLDERS)
@pytest.mark.parametrize("override,pattern", METHOD_REJECTS)
def test_every_folder_validates_the_method_keys(folder, override, pattern):
    config = module(folder, "config")
    cfg = configlib.apply_overrides(config.CONFIG, [override])
    with pytest.raises(UserError, match=pattern):
        config.validate(cfg)


@pytest.mark.parametrize("override,pattern", [
    ("data.labelled_mirror_prob=0.5", r"labelled_mirror_prob must be 0 while posX is an entity"),
    ("data.labelled_shift=4", r"labelled_shift must be 0 while posX or posY is an entity"),
    ("data.nuisances.scale=[2, 6]", r"data.nuisances.scale index 6 is outside 0..5"),
    ("data.nuisances.orientation=[-1]", r"data.nuisances.orientation index -1"),
    ("data.nuisances.scale=[]", r"data.nuisances.scale is empty"),
])
def test_dsprites_validate_rejects_its_data_keys(override, pattern):
    cfg = _apply(override)
    with pytest.raises(UserError, match=pattern):
        validate(cfg)


def test_validate_factor_both_entity_and_nuisance():
    cfg = _edited()
    cfg["data"]["nuisances"]["shape"] = [0]
    with pytest.raises(UserError, match=r"factor 'shape' must appear exactly once"):
        validate(cfg)


def test_validate_factor_in_neither():
    cfg = _edited()
    del cfg["data"]["nuisances"]["scale"]
    with pytest.raises(UserError, match=r"factor 'scale' must appear exactly once"):
        validate(cfg)


def test_validate_unknown_factor_name():
    cfg = _edited()
    cfg["data"]["nuisances"]["colour"] = [0]
    with pytest.raises(UserError, match=r"'colour' is not a dSprites factor"):
        validate(cfg)


def test_bins_outside_range_refused_by_entity_space():
    cfg = _apply("entities.bins.posX=[[0,1],[30,32]]")
    validate(cfg)  # ranges of entity bins are EntitySpace's job
    with pytest.raises(UserError, match=r"bin index 32 of entity factor 'posX' is outside 0..31"):
        ds.entity_space(cfg)


def test_relation_with_unknown_factor_refused_by_entity_space():
    rels = [{"name": "grow", "factor": "size", "step": 1, "cyclic": False}]
    cfg = _apply(f"entities.relations={json.dumps(rels)}")
    with pytest.raises(UserError, match=r"relation 'grow' changes 'size'"):
        ds.entity_space(cfg)


# ---------------------------------------------------------------- data split / budget


@pytest.mark.parametrize("split", [[0.8, 0.1], [0.8, 0.1, 0.2], [0.9, 0.2, -0.1], [0.5, 0.3, 0.1]])
def test_split_must_be_three_fractions_summing_to_one(split):
    with pytest.raises(UserError, match=r"data.split must be three non-negative fractions"):
        split_indices(100, split, seed=0)


def test_split_partitions_and_is_deterministic():
    parts = split_indices(1000, [0.8, 0.1, 0.1], seed=3)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    np.testing.assert_array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(1000))
    again = split_indices(1000, [0.8, 0.1, 0.1], seed=3)
    other = split_indices(1000, [0.8, 0.1, 0.1], seed=4)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["train"], other["train"])


def test_labelled_budget_larger_than_available_names_the_max():
    entities = np.repeat(np.arange(4), [10, 7, 12, 9])
    with pytest.raises(UserError, match=r"labelled_per_entity=8.*entity 1 has only 7.*at most 7"):
        labelled_subset(entities, 8, 4, seed=0)
    with pytest.raises(UserError, match="labelled_per_entity must be >= 1"):
        labelled_subset(entities, 0, 4, seed=0)
    # an entity with no images at all
    with pytest.raises(UserError, match=r"entity 4 has only 0"):
        labelled_subset(entities, 1, 5, seed=0)
    chosen = labelled_subset(entities, 7, 4, seed=0)
    np.testing.assert_array_equal(np.bincount(entities[chosen]), [7, 7, 7, 7])
    assert len(np.unique(chosen)) == 28


def test_a_budget_per_bin_labels_every_bin_with_as_few_images_as_it_can():
    # MPI3D's entity grid: colour (6) x shape (6) x size (2), 720 training images per entity
    entity_bins = np.array(list(itertools.product(range(6), range(6), range(2))))
    entities = np.random.default_rng(0).permutation(np.repeat(np.arange(72), 720))
    for per_bin in (1, 5, 12, 60):
        chosen = labelled_per_bin(entities, entity_bins, per_bin, seed=0)
        assert len(np.unique(chosen)) == len(chosen) == 6 * per_bin  # the fewest there can be
        bins = entity_bins[entities[chosen]]
        for f, n in enumerate((6, 6, 2)):
            # every bin has its labels; the greedy order keeps the two sizes even as well
            assert np.bincount(bins[:, f], minlength=n).min() >= per_bin
            assert np.ptp(np.bincount(bins[:, f], minlength=n)) <= 1
    again = labelled_per_bin(entities, entity_bins, 5, seed=0)
    np.testing.assert_array_equal(again, labelled_per_bin(entities, entity_bins, 5, seed=0))
    assert not np.array_equal(again, labelled_per_bin(entities, entity_bins, 5, seed=1))
    # two factors of two bins, entity 3 = (1, 1) without images: bin 1 of the first factor
    # has entity 2's three, bin 1 of the second entity 1's three
    small = np.repeat(np.arange(3), 3)
    grid = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    chosen = labelled_per_bin(small, grid, 3, seed=0)
    assert np.bincount(small[chosen], minlength=3)[1:].tolist() == [3, 3]  # all there is
    assert len(chosen) <= 7  # greedy: six would do, entity 0 may give one on the way
    with pytest.raises(UserError, match=r"labelled_per_bin=4 but bin 1 of entity factor 0 has "
                                        r"only 3"):
        labelled_per_bin(small, grid, 4, seed=0)
    with pytest.raises(UserError, match="labelled_per_bin must be >= 1"):
        labelled_per_bin(small, grid, 0, seed=0)


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_budget_per_bin_needs_the_modular_prior(folder):
    config = module(folder, "config")
    cfg = copy.deepcopy(config.CONFIG)
    cfg["data"]["labelled_per_bin"] = 10
    cfg["prior"].update(kind="entity", blocks=[], free_dims=0)  # Shapes3D's default is modular
    with pytest.raises(UserError, match="labelled_per_bin=10 needs prior.kind=modular"):
        config.validate(cfg)
    cfg["prior"]["kind"] = "modular"
    config.validate(cfg)


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_consistency_term_needs_a_transformation(folder):
    config = module(folder, "config")
    cfg = copy.deepcopy(config.CONFIG)
    cfg["data"].update(labelled_mirror_prob=0.0, labelled_shift=0, noise_prob=0.0, mask_prob=0.0)
    cfg["train"]["consistency_weight"] = 2.0
    with pytest.raises(UserError, match=r"consistency_weight=2.0 needs a transformation"):
        config.validate(cfg)
    cfg["data"]["noise_prob"] = 0.3  # each picture against itself with other noise
    config.validate(cfg)
    cfg["data"]["noise_prob"], cfg["train"]["consistency_weight"] = 0.0, 0.0
    config.validate(cfg)


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_entity_kind_ignores_the_block_sizes_and_refuses_a_free_block(folder):
    """Switching a modular config to prior.kind=entity needs prior.free_dims=0 and nothing
    else: the block sizes, which no longer add up, are not read."""
    config = module(folder, "config")
    cfg = copy.deepcopy(config.CONFIG)
    factors = len(cfg["entities"]["bins"])
    cfg["model"]["z_dim"] = factors + 6
    cfg["prior"].update(kind="modular", blocks=[1] * factors, free_dims=6)
    config.validate(cfg)
    cfg["prior"]["kind"] = "entity"
    with pytest.raises(UserError, match="prior.free_dims=6 needs prior.kind=modular"):
        config.validate(cfg)
    cfg["prior"]["free_dims"] = 0
    config.validate(cfg)  # blocks of 1 no longer add up to z_dim: not read
    cfg["prior"]["kind"] = "modular"
    with pytest.raises(UserError, match="prior.blocks must be"):
        config.validate(cfg)


def test_lr_factor_falls_linearly_to_zero_over_the_last_relational_epochs():
    train = {"warmup_epochs": 1, "relational_epochs": 8, "lr_decay_epochs": 4}
    assert [lr_factor(train, e) for e in (0.0, 0.5, 4.0, 5.0)] == [1.0, 1.0, 1.0, 1.0]
    assert lr_factor(train, 7.0) == pytest.approx(0.5)
    assert lr_factor(train, 8.75) == pytest.approx(0.0625)
    train["lr_decay_epochs"] = 0  # constant
    assert lr_factor(train, 8.75) == 1.0
    train["lr_decay_epochs"] = 20  # more than there are: over the whole relational phase
    assert lr_factor(train, 1.0) == 1.0 and lr_factor(train, 5.0) == pytest.approx(0.5)


# dSprites refuses every move that changes a nuisance while position is an entity factor
@pytest.mark.parametrize("folder", ["shapes3d", "mpi3d"])
def test_the_invariance_term_needs_a_free_block_and_a_change_of_nuisances(folder):
    """train.invariance_weight keeps the nuisances in the free block: refused without one, or
    without a move that changes nuisances."""
    config = module(folder, "config")
    cfg = copy.deepcopy(config.CONFIG)
    factors = len(cfg["entities"]["bins"])
    cfg["model"]["z_dim"] = factors + 4
    cfg["prior"].update(kind="modular", blocks=[1] * factors, free_dims=4)
    cfg["data"].update(labelled_mirror_prob=0.0, labelled_shift=0, background_swap_prob=0.0,
                       noise_prob=0.5)
    cfg["train"]["invariance_weight"] = 3.0
    with pytest.raises(UserError, match=r"invariance_weight=3.0 compares each picture's entity"):
        config.validate(cfg)
    cfg["data"]["labelled_mirror_prob"] = 0.5
    config.validate(cfg)
    cfg["prior"]["free_dims"], cfg["model"]["z_dim"] = 0, factors
    with pytest.raises(UserError, match=r"invariance_weight=3.0 .* needs prior.kind=modular "
                                        r"and prior.free_dims > 0"):
        config.validate(cfg)
    cfg["train"]["invariance_weight"] = 0.0
    config.validate(cfg)


def test_background_swap_is_a_probability_and_refused_where_every_background_is_black():
    for folder in ("shapes3d", "mpi3d"):
        config = module(folder, "config")
        cfg = copy.deepcopy(config.CONFIG)
        cfg["data"]["background_swap_prob"] = 1.5
        with pytest.raises(UserError, match=r"data.background_swap_prob must be in \[0, 1\]"):
            config.validate(cfg)
        cfg["data"]["background_swap_prob"] = 0.5
        config.validate(cfg)
    config = module("dsprites", "config")
    cfg = copy.deepcopy(config.CONFIG)
    cfg["data"]["background_swap_prob"] = 0.5
    with pytest.raises(UserError, match="background_swap_prob must be 0 on dSprites"):
        config.validate(cfg)


def test_overrides_may_stand_on_both_sides_of_the_preset():
    from common import cli

    presets = module("dsprites", "config").PRESETS
    args = cli.parse_args("dsprites", presets, ["run.seed=1", "--preset", "labels1", "run.name=x"])
    assert args.preset == "labels1" and args.overrides == ["run.seed=1", "run.name=x"]
    with pytest.raises(SystemExit):  # the run's own config: no overrides with --evaluate
        cli.parse_args("dsprites", presets, ["--evaluate", "runs/x", "run.seed=1"])

"""MPI3D defaults. Edit here, or override on the command line:

    python mpi3d/train.py train.relational_epochs=30 data.variant=real data.path=mpi3d_real.npz

Entities: object_color (6) x object_shape (6) x object_size (2) = 72. Nuisances vary freely
inside an entity: all 3 camera heights and 3 backgrounds, and every 4th position of the arm on
each axis: 72 * 3 * 3 * 10 * 10 = 64,800 images. As on Shapes3D, many nuisance values and few
epochs beat few values and many epochs: the labelled set (at most 10 % of the images) grows
with the data, and the encoder sees each object in more places.
"""

from common import config as configlib
from common.errors import UserError
from mpi3d.dataset import FACTOR_NAMES, VARIANTS, factor_sizes

_AXIS = list(range(0, 40, 4))

CONFIG = {
    "run": {
        "seed": 0,
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "root": "runs",  # relative paths are from the repository root
        "name": "",  # empty: mpi3d-<timestamp>
        "eval_every": 2,  # epochs between validation passes (relational phase)
        "threads": 0,  # CPU threads for torch; 0 keeps torch's default
        "tensorboard": True,  # TensorBoard event files in <run>/tensorboard/ (common/board.py)
    },
    "data": {
        "path": "",  # a real MPI3D npz; empty: procedural toy stand-in
        "variant": "toy",  # toy | realistic | real | complex (sets the expected factor grid)
        "cache_dir": "data_cache",
        "nuisances": {"camera_height": [0, 1, 2], "background_color": [0, 1, 2],
                      "horizontal_axis": _AXIS, "vertical_axis": _AXIS},
        "split": [0.8, 0.1, 0.1],  # train, val, test
        "labelled_per_entity": 70,  # supervision budget: 5,040 of 51,840 training images, 9.7 %
        "noise_prob": 0.0,  # fraction of a batch given salt-and-pepper noise (input only)
        "noise_rate": 0.05,  # fraction of pixels set to black or white in a noisy image
        "mask_prob": 0.0,  # fraction of a batch with a random square blanked (input only)
        "mask_size": 16,  # side of that square, pixels
        "labelled_mirror_prob": 0.5,  # fraction of labelled inputs mirrored left-right
    },
    "entities": {
        "bins": {"object_color": [[c] for c in range(6)],
                 "object_shape": [[s] for s in range(6)],
                 "object_size": [[0], [1]]},
        "relations": [
            {"name": "color+", "factor": "object_color", "step": 1, "cyclic": True},
            {"name": "color-", "factor": "object_color", "step": -1, "cyclic": True},
            {"name": "shape+", "factor": "object_shape", "step": 1, "cyclic": True},
            {"name": "shape-", "factor": "object_shape", "step": -1, "cyclic": True},
            {"name": "size_swap", "factor": "object_size", "step": 1, "cyclic": True},
        ],
    },
    "model": {
        "z_dim": 10,
        "channels": [32, 32, 64, 64],  # encoder conv widths (decoder mirrors them)
        "hidden": 256,
        "disc_hidden": 512,
        "rel_hidden": 256,
    },
    "prior": {
        "warmup": "normal",  # normal | uniform  (phase-1 prior)
        "gm_cov": 1.0,  # component covariance = gm_cov x the entity's empirical covariance
        "pooling": 0.0,  # covariance shrinkage towards the pooled within-entity covariance
        "learn_means": True,  # adaptive means, trained by the relational loss
        "min_separation": 6.0,  # Mahalanobis distance under which learnt means are pushed apart
        # learning rate of the adaptive means: after a short RGB warm-up the entities start
        # entangled, and the means must move apart quickly
        "means_lr": 1e-2,
    },
    "train": {
        "batch_size": 128,
        "labelled_batch_size": 64,
        "rel_batch_size": 512,
        "warmup_epochs": 1,
        "relational_epochs": 16,
        "lr": 1e-3,
        "disc_lr": 1e-3,
        "rel_lr": 3e-3,
        "lr_decay_epochs": 4,  # every lr falls linearly to 0 over these last epochs; 0: constant
        "rel_steps": 2,  # ReL updates per training step (cheap: an MLP on prior samples)
        "adv_weight": 3.0,
        "sup_weight": 20.0,  # weight of the supervised term (sup_loss); 0 = paper
        "rel_loss": "mse",  # mse (paper) | nll | xent
        "sup_loss": "nll+xent",  # nll | nll+xent (also pushes labelled codes off other components)
        "rel_noise": "matched",  # target sample's noise: independent (paper) | matched
        "rel_codes": True,  # ReL also learns from encoded labelled codes, not only prior samples
        "amp": "auto",  # bf16 autocast: auto (where the hardware has bf16) | bf16 | off
        "channels_last": True,  # NHWC convolutions: faster on CPU and on tensor cores
        "compile": False,  # torch.compile the networks (pays off on GPU for long runs)
    },
    "eval": {
        "qs": [0.5, 0.9, 0.99, 0.999, 1.0],
        "q": 0.99,  # confidence used for relation acceptance
        "rel_samples": 100,  # prior samples per (entity, relation) for latent relation accuracy
        "classifier_steps": 1500,  # training steps of the factor classifier (cached per data)
    },
}

PRESETS = {
    # The original study's scale: long training, every augmentation. Meant for a GPU.
    "paper": {
        "train.batch_size": 512,
        "train.labelled_batch_size": 128,
        "train.rel_batch_size": 2048,
        "train.warmup_epochs": 100,
        "train.relational_epochs": 400,
        "data.noise_prob": 0.3,
        "data.mask_prob": 0.3,
        "train.compile": True,
        "run.eval_every": 20,
    },
    # A smoke test: 12 entities, about a hundred pictures, seconds per epoch on a CPU (the tests').
    "tiny": {
        "entities.bins.object_color": [[0], [1]],
        "entities.bins.object_shape": [[0], [1], [5]],
        "data.nuisances.camera_height": [0],
        "data.nuisances.background_color": [0, 1],
        "data.nuisances.horizontal_axis": [0, 20],
        "data.nuisances.vertical_axis": [0, 20],
        "run.eval_every": 1,
        "data.labelled_per_entity": 2,
        "data.noise_prob": 0.5,
        "data.mask_prob": 0.5,
        "model.channels": [8, 8, 16, 16],
        "model.hidden": 64,
        "model.disc_hidden": 64,
        "model.rel_hidden": 64,
        "train.batch_size": 16,
        "train.labelled_batch_size": 8,
        "train.rel_batch_size": 64,
        "train.warmup_epochs": 1,
        "train.relational_epochs": 2,
        "eval.rel_samples": 5,
        "eval.classifier_steps": 30,
    },
}


def validate(cfg: dict) -> None:
    """Every range check the type checker cannot do; raises UserError naming the key."""
    validate_method(cfg)
    validate_data(cfg)


def validate_method(cfg: dict) -> None:
    """The method's keys: run, model, prior, train and eval."""
    train, model, prior, evaluation = cfg["train"], cfg["model"], cfg["prior"], cfg["eval"]
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
    # model.Encoder halves 64 x 64 four times, one convolution per width
    if model["z_dim"] < 1 or len(model["channels"]) != 4 or min(model["channels"]) < 1:
        raise UserError("model.z_dim must be >= 1 and model.channels four positive widths")
    if cfg["run"]["eval_every"] < 1:
        raise UserError(f"run.eval_every must be >= 1, got {cfg['run']['eval_every']}")
    for key in ("rel_samples", "classifier_steps"):
        if evaluation[key] < 1:
            raise UserError(f"eval.{key} must be >= 1, got {evaluation[key]}")


def validate_data(cfg: dict) -> None:
    """The data and entities keys: the file variant, factors and augmentation."""
    data = cfg["data"]
    if data["variant"] not in VARIANTS:
        raise UserError(f"data.variant must be one of {', '.join(VARIANTS)}, got "
                        f"'{data['variant']}'")
    if not data["path"] and data["variant"] != "toy":
        raise UserError(f"data.variant='{data['variant']}' has no procedural stand-in; set "
                        "data.path to the real file, or data.variant=toy")
    configlib.validate_factors(cfg, f"MPI3D ({data['variant']})", FACTOR_NAMES,
                               factor_sizes(data["variant"]))
    for key in ("noise_prob", "noise_rate", "mask_prob", "labelled_mirror_prob"):
        if not 0.0 <= data[key] <= 1.0:
            raise UserError(f"data.{key} must be in [0, 1], got {data[key]}")
    if not 1 <= data["mask_size"] <= 64:
        raise UserError(f"data.mask_size must be in 1..64, got {data['mask_size']}")

"""dSprites defaults. Edit here, or override on the command line:

    python dsprites/train.py train.relational_epochs=40 model.z_dim=8
    python dsprites/train.py --preset paper          # paper-scale run (GPU)

Entities: shape (3) x posX (3 bins) x posY (3 bins) = 27. Nuisances vary freely inside an
entity: scale idx 2-4 and orientation idx 0-2, 37-39 (near-upright), as in the original study:
3 * 3 * 6 * 15 * 15 = 12,150 images.
"""

from common.errors import UserError
from dsprites.dataset import FACTOR_NAMES, FACTOR_SIZES

_EDGES = [[0, 1, 2, 3, 4], [13, 14, 15, 16, 17], [27, 28, 29, 30, 31]]

CONFIG = {
    "run": {
        "seed": 0,
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "root": "runs",  # relative paths are from the repository root
        "name": "",  # empty: dsprites-<timestamp>
        "eval_every": 2,  # epochs between validation passes (relational phase)
        "threads": 0,  # CPU threads for torch; 0 keeps torch's default
    },
    "data": {
        "path": "",  # real dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz; empty: procedural
        "cache_dir": "data_cache",
        "nuisances": {"color": [0], "scale": [2, 3, 4], "orientation": [0, 1, 2, 37, 38, 39]},
        "split": [0.8, 0.1, 0.1],  # train, val, test
        "labelled_per_entity": 20,  # the supervision budget: 540 of 9,720 training images
        "noise_prob": 0.0,  # fraction of a batch given salt-and-pepper noise (input only)
        "noise_rate": 0.05,  # fraction of pixels flipped in a noisy image
        "mask_prob": 0.0,  # fraction of a batch with a random square blanked (input only)
        "mask_size": 16,  # side of that square, pixels
    },
    "entities": {
        "bins": {"shape": [[0], [1], [2]], "posX": _EDGES, "posY": _EDGES},
        "relations": [
            {"name": "left", "factor": "posX", "step": -1, "cyclic": True},
            {"name": "right", "factor": "posX", "step": 1, "cyclic": True},
            {"name": "up", "factor": "posY", "step": -1, "cyclic": True},
            {"name": "down", "factor": "posY", "step": 1, "cyclic": True},
            {"name": "next_shape", "factor": "shape", "step": 1, "cyclic": True},
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
        "gm_cov": 0.5,  # component covariance = gm_cov x the entity's empirical covariance
        "learn_means": True,  # adaptive means, trained by the relational loss
        "min_separation": 6.0,  # Mahalanobis distance under which learnt means are pushed apart
        "means_lr": 1e-3,  # learning rate of the adaptive means
    },
    "train": {
        "batch_size": 128,
        "labelled_batch_size": 64,
        "rel_batch_size": 512,
        "warmup_epochs": 8,
        "relational_epochs": 12,
        "lr": 1e-3,
        "disc_lr": 1e-3,
        "rel_lr": 3e-3,
        "rel_steps": 2,  # ReL updates per training step (cheap: an MLP on prior samples)
        "adv_weight": 3.0,
        "sup_weight": 6.0,  # NLL of labelled codes under their own component; 0 = paper
        "rel_loss": "mse",  # mse (paper) | nll | xent
        "rel_noise": "independent",  # target sample's noise: independent (paper) | matched
        "amp": "auto",  # bf16 autocast: auto (on for CUDA) | bf16 | off
        "channels_last": True,  # NHWC convolutions: faster on CPU and on tensor cores
        "compile": False,  # torch.compile the networks (pays off on GPU for long runs)
    },
    "eval": {
        "qs": [0.5, 0.9, 0.99, 0.999, 1.0],
        "q": 0.99,  # confidence used for relation acceptance
        "rel_samples": 100,  # prior samples per (entity, relation) for latent relation accuracy
        "classifier_steps": 800,  # training steps of the factor classifier (cached per data)
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
}

def validate(cfg: dict) -> None:
    """Range checks the type checker cannot do; raises UserError naming the key."""
    train, data, model = cfg["train"], cfg["data"], cfg["model"]
    for key in ("warmup_epochs", "relational_epochs"):
        if train[key] < 0:
            raise UserError(f"train.{key} must be >= 0, got {train[key]}")
    for key in ("batch_size", "labelled_batch_size", "rel_batch_size", "rel_steps"):
        if train[key] < 1:
            raise UserError(f"train.{key} must be >= 1, got {train[key]}")
    for key in ("lr", "disc_lr", "rel_lr"):
        if train[key] <= 0:
            raise UserError(f"train.{key} must be > 0, got {train[key]}")
    if cfg["prior"]["means_lr"] <= 0:
        raise UserError(f"prior.means_lr must be > 0, got {cfg['prior']['means_lr']}")
    if train["amp"] not in ("auto", "bf16", "off"):
        raise UserError(f"train.amp must be auto, bf16 or off, got '{train['amp']}'")
    if train["rel_loss"] not in ("mse", "nll", "xent"):
        raise UserError(f"train.rel_loss must be mse, nll or xent, got '{train['rel_loss']}'")
    if train["rel_noise"] not in ("independent", "matched"):
        raise UserError(f"train.rel_noise must be independent or matched, got "
                        f"'{train['rel_noise']}'")
    if cfg["prior"]["warmup"] not in ("normal", "uniform"):
        raise UserError(f"prior.warmup must be normal or uniform, got '{cfg['prior']['warmup']}'")
    if cfg["prior"]["gm_cov"] <= 0:
        raise UserError(f"prior.gm_cov must be > 0, got {cfg['prior']['gm_cov']}")
    if model["z_dim"] < 1 or len(model["channels"]) != 4 or min(model["channels"]) < 1:
        raise UserError("model.z_dim must be >= 1 and model.channels four positive widths")
    for key in ("noise_prob", "noise_rate", "mask_prob"):
        if not 0.0 <= data[key] <= 1.0:
            raise UserError(f"data.{key} must be in [0, 1], got {data[key]}")
    if not 1 <= data["mask_size"] <= 64:
        raise UserError(f"data.mask_size must be in 1..64, got {data['mask_size']}")
    if cfg["run"]["eval_every"] < 1:
        raise UserError(f"run.eval_every must be >= 1, got {cfg['run']['eval_every']}")
    if cfg["eval"]["classifier_steps"] < 1:
        raise UserError(f"eval.classifier_steps must be >= 1, got "
                        f"{cfg['eval']['classifier_steps']}")
    if cfg["eval"]["rel_samples"] < 1:
        raise UserError(f"eval.rel_samples must be >= 1, got {cfg['eval']['rel_samples']}")
    _validate_factors(cfg)


def _validate_factors(cfg: dict) -> None:
    bins, nuisances = cfg["entities"]["bins"], cfg["data"]["nuisances"]
    for name in list(bins) + list(nuisances):
        if name not in FACTOR_NAMES:
            raise UserError(f"'{name}' is not a dSprites factor; choose from {list(FACTOR_NAMES)}")
    for name, size in zip(FACTOR_NAMES, FACTOR_SIZES):
        if (name in bins) == (name in nuisances):
            raise UserError(
                f"factor '{name}' must appear exactly once: in entities.bins or data.nuisances"
            )
        for idx in nuisances.get(name, []):
            if not 0 <= idx < size:
                raise UserError(f"data.nuisances.{name} index {idx} is outside 0..{size - 1}")
        if name in nuisances and not nuisances[name]:
            raise UserError(f"data.nuisances.{name} is empty; list at least one index")

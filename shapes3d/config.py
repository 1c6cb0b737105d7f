"""Shapes3D defaults. Edit here, or override on the command line:

    python shapes3d/train.py train.relational_epochs=40 data.path=/data/3dshapes.h5

Entities: object_hue (10) x shape (4) x scale (3 bins: indices {0,1}, {3,4}, {6,7}) = 120.
Nuisances vary freely inside an entity: all 10 floor hues, all 10 wall hues and 3 camera
orientations (left, front, right): 120 * 2 * 10 * 10 * 3 = 72,000 images. Many nuisance values
and few epochs beat few values and many epochs: the labelled set (at most 10 % of the images)
grows with the data, and the encoder sees each entity under more backgrounds. Scale indices 2
and 5 are left out, so neighbouring size bins are told apart by a clear step, as in the
original study.

Hue relations wrap around the colour circle (hue 0.9 -> 0.0 is one more step of 0.1); size
relations saturate: "bigger" leaves the biggest objects as they are, "smaller" the smallest.
"""

import re

from common import config as configlib
from common.errors import UserError
from shapes3d.dataset import FACTOR_NAMES, FACTOR_SIZES

CONFIG = {
    "run": {
        "seed": 0,
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "root": "runs",  # relative paths are from the repository root
        "name": "",  # empty: shapes3d-<timestamp>
        "eval_every": 1,  # epochs between validation passes (relational phase)
        "threads": 0,  # CPU threads for torch; 0 keeps torch's default
        "tensorboard": True,  # TensorBoard event files in <run>/tensorboard/ (common/board.py)
    },
    "data": {
        "path": "",  # the real 3dshapes.h5; empty: procedural stand-in
        "cache_dir": "data_cache",
        "nuisances": {"floor_hue": list(range(10)), "wall_hue": list(range(10)),
                      "orientation": [0, 7, 14]},
        "split": [0.8, 0.1, 0.1],  # train, val, test
        "labelled_per_entity": 5,  # supervision budget: 600 of 57,600 training images, 1.0 %
        # > 0: instead, as few labelled images as give every bin of every entity factor this
        # many labels (prior.kind=modular only: its components are bins; common/data.py)
        "labelled_per_bin": 0,
        "noise_prob": 0.0,  # fraction of a batch given salt-and-pepper noise (input only)
        "noise_rate": 0.05,  # fraction of pixels set to black or white in a noisy image
        "mask_prob": 0.0,  # fraction of a batch with a random square blanked (input only)
        "mask_size": 16,  # side of that square, pixels
        "labelled_mirror_prob": 0.5,  # fraction of labelled inputs mirrored left-right
        # labelled inputs moved by up to this many pixels each way (0: off). The object always
        # stands in the middle, so a move shows the encoder pictures that never occur; 4 px cost
        # shape accuracy at five labels per entity (RESULTS.md, "Small labelled budgets")
        "labelled_shift": 0,
        # fraction of moved inputs (labelled ones, and the unlabelled ones the consistency and
        # invariance terms compare) given another picture's background colour, which here is
        # the wall's or the floor's, whichever fills more of the picture's border (augment.py)
        "background_swap_prob": 0.0,
    },
    "entities": {
        "bins": {"object_hue": [[h] for h in range(10)],
                 "shape": [[s] for s in range(4)],
                 "scale": [[0, 1], [3, 4], [6, 7]]},
        "relations": [
            {"name": "hue+", "factor": "object_hue", "step": 1, "cyclic": True},
            {"name": "hue-", "factor": "object_hue", "step": -1, "cyclic": True},
            {"name": "bigger", "factor": "scale", "step": 1, "cyclic": False},
            {"name": "smaller", "factor": "scale", "step": -1, "cyclic": False},
            {"name": "next_shape", "factor": "shape", "step": 1, "cyclic": True},
        ],
    },
    "model": {
        "z_dim": 14,  # 3 + 4 + 3 for the entity factors' blocks, 4 free (prior.blocks)
        "channels": [32, 32, 64, 64],  # encoder conv widths (decoder mirrors them)
        # batch normalisation after every convolution but the decoder's last: "batch" | "none".
        # With prior.kind=modular it is what makes 5 labels per entity work (either alone leaves
        # clustering at 0.65-0.90: RESULTS.md, "Shapes3D at five labels per entity")
        "norm": "batch",
        "hidden": 256,
        "disc_hidden": 512,
        "rel_hidden": 256,
    },
    "prior": {
        "warmup": "normal",  # normal | uniform  (phase-1 prior)
        # component covariance = gm_cov x the entity's empirical covariance: as wide as the
        # labelled codes, because the unlabelled codes spread at least as far
        "gm_cov": 1.0,
        "pooling": 0.0,  # covariance shrinkage towards the pooled within-entity covariance
        # entity: one component per entity (the paper's); modular: one block of the code per
        # entity factor, one component per bin in each block (prior.py)
        "kind": "modular",
        # modular: dimensions of each entity factor's block (hue, shape, scale); []: an even split
        "blocks": [3, 4, 3],
        # modular: the code's last dimensions, one component shared by every entity and moved
        # by no relation (room for the nuisances: floor hue, wall hue, orientation); the factor
        # blocks share the rest. Without it the relations drag the backgrounds along
        "free_dims": 4,
        # relational epochs between fits of the covariances to the encoded labelled images
        # (at their own spread), the learnt means kept; 0: fixed after the first fit (paper)
        "refit_every": 0,
        # the last relational epochs, each begun by calibrating the covariances to where the
        # encoder puts the training images, about the learnt means (train.py); 0: never
        "calibrate_epochs": 4,
        "calibrate_images": 10000,  # unlabelled training images a calibration reads
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
        # two: the encoder sees every picture twice before the blocks are fitted to the few
        # labelled codes (one leaves a seed in three with shape at 0.90)
        "warmup_epochs": 2,
        # ten: after seven, relation steps kept the floor, the wall and the turn 0.72-0.75 of
        # the time on two seeds of three; after ten, 0.95-0.96 on those seeds, for about three
        # minutes more (RESULTS.md, "Shapes3D: ten relational epochs")
        "relational_epochs": 10,
        "lr": 1e-3,
        "disc_lr": 1e-3,
        "rel_lr": 3e-3,
        "lr_decay_epochs": 0,  # every lr falls linearly to 0 over these last epochs; 0: constant
        # a checkpoint inside the epoch every so many seconds (0: at epoch ends only), bounding
        # what a SIGKILL loses in long epochs; SIGTERM/SIGUSR1 write one at the next step anyway
        "checkpoint_every_s": 300.0,
        # reconstruction weight of the pixels that differ from the background (loss.py)
        "recon_object_weight": 0.0,
        "rel_steps": 2,  # ReL updates per training step (cheap: an MLP on prior samples)
        "adv_weight": 3.0,
        "sup_weight": 20.0,  # weight of the supervised term (sup_loss); 0 = paper
        "rel_loss": "mse",  # mse (paper) | nll | xent
        "sup_loss": "nll+xent",  # nll | nll+xent (also pushes labelled codes off other components)
        # weight of a term that asks the entity posterior of each unlabelled picture to be
        # what it is for the same picture mirrored and moved as the labelled ones are
        # (data.labelled_mirror_prob, data.labelled_shift) and noised or masked (data.noise_prob,
        # data.mask_prob): no labels (loss.py); one of those must be on; 0: off. On here, with
        # the mirror, because it keeps the hue steps' decoded pictures on the right hue
        # (RESULTS.md, "A consistency term for the unlabelled pictures")
        "consistency_weight": 5.0,
        # target sample's noise: independent (paper) | matched (ReL keeps the within-entity
        # position, i.e. the backgrounds)
        # weight of a term that keeps each block of the modular code from telling
        # the entity factors it does not hold (a small adversary guesses them from the block,
        # the encoder makes its guesses uniform; loss.py), so a relation that moves one block
        # leaves no trace of the old value elsewhere. Measured on MPI3D only (RESULTS.md); 0: off
        "leak_weight": 0.0,
        # weight of a term that asks the entity blocks of each unlabelled picture's code to be
        # where they are for the same picture mirrored, moved and recoloured as the labelled
        # ones are (data.*): the nuisances are then the free block's alone, so a relation does
        # not carry them. prior.kind=modular with prior.free_dims > 0; no labels (loss.py); 0: off
        "invariance_weight": 0.0,
        # weight of a term that keeps the blocks of the modular code independent of one
        # another: a critic tells codes from codes whose blocks were shuffled across the batch,
        # and the encoder is trained to fool it (loss.py), so a nuisance is told by one block
        # and not dragged along by a relation that moves another. It reads no label; 0: off.
        # Off: on MPI3D every decoded number fell, on Shapes3D the hue steps (RESULTS.md,
        # "A block-independence term")
        "indep_weight": 0.0,
        # self-training: every relational epoch from train.pseudo_after on, this many
        # unlabelled training images per entity, the ones pseudo_source is surest of, join the
        # supervised term with the entity it gives them (train.py); no label is read; 0: off
        "pseudo_per_entity": 0,
        "pseudo_after": 2,  # relational epochs before the first pseudo-labels
        # who gives them: mixture (the prior's components) | graph (the labelled codes'
        # entities spread over the graph of each code's pseudo_neighbours nearest codes; with
        # prior.kind=modular, each factor's bins over the graph of its block alone)
        "pseudo_source": "mixture",
        "pseudo_neighbours": 10,
        # graph: the share of a code's label that comes from its neighbours at each step of the
        # spreading (Zhou et al.'s alpha, scikit-learn's default 0.2); higher reaches further
        "pseudo_alpha": 0.2,
        "rel_noise": "matched",
        "rel_codes": True,  # ReL also learns from encoded labelled codes, not only prior samples
        "amp": "auto",  # bf16 autocast: auto (where the hardware has bf16) | bf16 | off
        "channels_last": True,  # NHWC convolutions: faster on CPU and on tensor cores
        # torch.compile the networks (pays off on GPU for long runs), in one of its modes:
        # off | default | reduce-overhead (CUDA graphs: one launch per compiled network and
        # step, for small networks whose steps wait on kernel launches; on a CPU the same as
        # default) | max-autotune (slow to compile)
        "compile": "off",
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
        "train.compile": "default",
        "run.eval_every": 20,
    },
    # The default before 2026-12-05: 45 labelled images per entity (5,400 of 57,600, 9.4 %),
    # one component per entity, no normalisation, for comparison (RESULTS.md, "Shapes3D: five
    # labels per entity, the default since 2026-12-05")
    "labels45": {
        "data.labelled_per_entity": 45,
        "model.norm": "none",
        "model.z_dim": 10,
        "prior.kind": "entity",
        "prior.blocks": [],
        "prior.free_dims": 0,
        "prior.calibrate_epochs": 2,
        "train.warmup_epochs": 1,
        "train.relational_epochs": 7,
        "train.consistency_weight": 0.0,
    },
    # A smoke test: 8 entities, about a hundred pictures, seconds per epoch on a CPU (the tests').
    "tiny": {
        "entities.bins.object_hue": [[0], [5]],
        "entities.bins.shape": [[0], [2]],
        "entities.bins.scale": [[0], [7]],
        "data.nuisances.floor_hue": [0, 5],
        "data.nuisances.wall_hue": [1, 6],
        "data.nuisances.orientation": [0, 14],
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
    validate_consistency(cfg)


# Every number of the method's keys: (lowest, highest) allowed, NaN and infinity never;
# configlib.POSITIVE as the lowest means "> 0". The upper bounds catch slips (a batch of 1e23
# images, 1e9 samples) at start-up instead of hours into a run.
RANGES = {
    "run.seed": (0, 2**32 - 1),  # numpy's seed range
    "run.threads": (0, 4096),
    "run.eval_every": (1, 10**6),
    "model.z_dim": (2, 4096),  # the latent-space picture needs two axes
    "model.hidden": (1, 65536), "model.disc_hidden": (1, 65536), "model.rel_hidden": (1, 65536),
    "train.warmup_epochs": (0, 10**6), "train.relational_epochs": (0, 10**6),
    "train.lr_decay_epochs": (0, 10**6),
    "train.batch_size": (1, 2**20), "train.labelled_batch_size": (1, 2**20),
    "train.rel_batch_size": (1, 2**22), "train.rel_steps": (1, 1000),
    "train.lr": (configlib.POSITIVE, 10.0), "train.disc_lr": (configlib.POSITIVE, 10.0),
    "train.rel_lr": (configlib.POSITIVE, 10.0),
    "train.adv_weight": (0.0, 1e38), "train.sup_weight": (0.0, 1e38),
    "train.checkpoint_every_s": (0.0, 1e9), "train.recon_object_weight": (0.0, 1e6),
    "train.consistency_weight": (0.0, 1e38), "train.leak_weight": (0.0, 1e38),
    "train.indep_weight": (0.0, 1e38), "train.invariance_weight": (0.0, 1e38),
    "train.pseudo_per_entity": (0, 10**8), "train.pseudo_after": (0, 10**6),
    "train.pseudo_neighbours": (1, 10**4), "train.pseudo_alpha": (configlib.POSITIVE, 0.999),
    "prior.gm_cov": (configlib.POSITIVE, 1e6), "prior.pooling": (0.0, 1.0),
    "prior.means_lr": (configlib.POSITIVE, 10.0), "prior.min_separation": (0.0, 1e6),
    "prior.refit_every": (0, 10**6), "prior.free_dims": (0, 4096),
    "data.labelled_per_bin": (0, 10**6),
    "prior.calibrate_epochs": (0, 10**6), "prior.calibrate_images": (1, 10**8),
    "eval.q": (configlib.POSITIVE, 1.0), "eval.rel_samples": (1, 10**5),
    "eval.classifier_steps": (1, 10**7),
}


def validate_method(cfg: dict) -> None:
    """The method's keys: run, model, prior, train and eval."""
    configlib.check_ranges(cfg, RANGES)
    choices = {"train.amp": ("auto", "bf16", "off"), "train.rel_loss": ("mse", "nll", "xent"),
               "train.sup_loss": ("nll", "nll+xent"),
               "train.pseudo_source": ("mixture", "graph"),
               "train.rel_noise": ("independent", "matched"),
               "train.compile": configlib.COMPILE_MODES,
               "prior.warmup": ("normal", "uniform"), "prior.kind": ("entity", "modular"),
               "model.norm": ("none", "batch")}
    for dotted, allowed in choices.items():
        section, key = dotted.split(".")
        if cfg[section][key] not in allowed:
            raise UserError(f"{dotted} must be one of {', '.join(allowed)}, got "
                            f"'{cfg[section][key]}'")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg["run"]["device"]):
        raise UserError(f"run.device must be auto, cpu, cuda or cuda:N, got "
                        f"'{cfg['run']['device']}'")
    # model.Encoder halves 64 x 64 four times, one convolution per width
    channels = cfg["model"]["channels"]
    if len(channels) != 4 or not all(configlib.is_int(c) and 1 <= c <= 4096 for c in channels):
        raise UserError(f"model.channels must be four widths in 1..4096, got {channels}")
    blocks, num_factors = cfg["prior"]["blocks"], len(cfg["entities"]["bins"])
    z_dim = cfg["model"]["z_dim"]
    free = cfg["prior"]["free_dims"]
    if free and cfg["prior"]["kind"] != "modular":
        raise UserError(f"prior.free_dims={free} needs prior.kind=modular (the entity kind has "
                        "no blocks); set prior.kind=modular or prior.free_dims=0")
    per_bin = cfg["data"]["labelled_per_bin"]
    if per_bin and cfg["prior"]["kind"] != "modular":
        raise UserError(f"data.labelled_per_bin={per_bin} needs prior.kind=modular (the entity "
                        "kind needs labels of every entity); set prior.kind=modular or "
                        "data.labelled_per_bin=0")
    # blocks are read by the modular kind alone: prior.kind=entity may keep the modular sizes
    modular = cfg["prior"]["kind"] == "modular"
    if modular and blocks and (len(blocks) != num_factors or sum(blocks) != z_dim - free
                               or not all(configlib.is_int(b) and b >= 1 for b in blocks)):
        raise UserError(f"prior.blocks must be {num_factors} block sizes >= 1 (one per entity "
                        f"factor) that add up to model.z_dim - prior.free_dims = {z_dim - free}, "
                        f"got {blocks}; [] splits those dimensions evenly")
    if modular and z_dim - free < num_factors:
        raise UserError(f"prior.kind=modular needs model.z_dim - prior.free_dims >= "
                        f"{num_factors}, one dimension per entity factor at least; got "
                        f"{z_dim} - {free}")
    qs = cfg["eval"]["qs"]
    # metrics.csv, the progress line and the summary read the metrics at q = 0.99
    if not all(isinstance(q, (int, float)) and 0 < q <= 1 for q in qs) or 0.99 not in qs:
        raise UserError(f"eval.qs must be confidences in (0, 1] and include 0.99, got {qs}")


def validate_data(cfg: dict) -> None:
    """The data and entities keys: factors and augmentation."""
    configlib.validate_factors(cfg, "Shapes3D", FACTOR_NAMES, FACTOR_SIZES)
    data = cfg["data"]
    for key in ("noise_prob", "noise_rate", "mask_prob", "labelled_mirror_prob",
                "background_swap_prob"):
        if not 0.0 <= data[key] <= 1.0:
            raise UserError(f"data.{key} must be in [0, 1], got {data[key]}")
    if not 1 <= data["mask_size"] <= 64:
        raise UserError(f"data.mask_size must be in 1..64, got {data['mask_size']}")
    if not 0 <= data["labelled_shift"] <= 32:
        raise UserError(f"data.labelled_shift must be in 0..32 pixels, got "
                        f"{data['labelled_shift']}")


def validate_consistency(cfg: dict) -> None:
    """train.consistency_weight compares each unlabelled picture's code with that of the same
    picture transformed: without a transformation the two agree and the term teaches nothing."""
    data = cfg["data"]
    moves = ("labelled_mirror_prob", "labelled_shift", "background_swap_prob", "noise_prob",
             "mask_prob")
    if cfg["train"]["consistency_weight"] > 0 and not any(data[key] for key in moves):
        raise UserError(
            f"train.consistency_weight={cfg['train']['consistency_weight']} needs a "
            "transformation that keeps the entity, or each picture is compared with itself and "
            "the term has no gradient: set data.labelled_mirror_prob, data.labelled_shift, "
            "data.background_swap_prob, data.noise_prob or data.mask_prob above 0, or "
            "train.consistency_weight=0")
    weight = cfg["train"]["invariance_weight"]
    if weight > 0 and (cfg["prior"]["kind"] != "modular" or cfg["prior"]["free_dims"] == 0):
        raise UserError(
            f"train.invariance_weight={weight} keeps the nuisances out of the entity blocks and "
            "in the free block: it needs prior.kind=modular and prior.free_dims > 0 (got "
            f"prior.kind={cfg['prior']['kind']}, prior.free_dims={cfg['prior']['free_dims']}); "
            "set them, or train.invariance_weight=0")
    if weight > 0 and not any(data[key] for key in moves[:3]):
        raise UserError(
            f"train.invariance_weight={weight} compares each picture's entity blocks with those "
            "of the same picture with other nuisances: set data.labelled_mirror_prob, "
            "data.labelled_shift or data.background_swap_prob above 0, or "
            "train.invariance_weight=0")

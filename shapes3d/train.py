"""Weak disentanglement on Shapes3D: train, resume or re-evaluate a run.

    python shapes3d/train.py [key=value ...]      # new run; overrides as in config.py
    python shapes3d/train.py data.path=/data/3dshapes.h5   # the real file
    python shapes3d/train.py --resume RUN_DIR     # continue a stopped run
    python shapes3d/train.py --evaluate RUN_DIR   # recompute metrics, pictures and report.md

The training loop itself is the same for every dataset (common/training.py: warm-up, adaptive
prior init, relational phase). This file names what Shapes3D brings to it; the last line
printed is the run folder.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.training import Recipe, cli
from shapes3d import config, dataset, log, loss, model, prior

RECIPE = Recipe(
    name="shapes3d",
    config=config.CONFIG,
    presets=config.PRESETS,
    validate=config.validate,
    load_data=dataset.load_data,
    augment=dataset.augment,
    build_networks=model.build,
    build_prior=prior.build,
    warmup_prior=prior.warmup,
    reconstruction=loss.reconstruction,
    write_pictures=log.write_pictures,
)

if __name__ == "__main__":
    sys.exit(cli(RECIPE))

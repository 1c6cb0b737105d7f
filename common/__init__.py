"""Utilities every dataset folder uses and nobody changes per dataset: config overrides,
Gaussian-mixture maths, entity tables, splits, metrics, plots, checkpoints, run folders, the
command line. The method itself (networks, priors, losses, the training loop) lives in each
dataset folder."""

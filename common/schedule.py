"""The learning-rate schedule: constant, then a straight fall to 0 over the last
train.lr_decay_epochs epochs. A function of the (fractional) epoch alone, so a resumed run
needs no scheduler state."""


def decay_start(train: dict) -> int | None:
    """The epoch where the learning rates start to fall: train.lr_decay_epochs before the end
    (the whole relational phase if it is shorter); None when they stay constant."""
    decay = min(train["lr_decay_epochs"], train["relational_epochs"])
    return train["warmup_epochs"] + train["relational_epochs"] - decay if decay else None


def lr_factor(train: dict, epoch: float) -> float:
    """Learning-rate multiplier at a (fractional) epoch: 1, then from decay_start straight down
    towards 0 at the end."""
    start, end = decay_start(train), train["warmup_epochs"] + train["relational_epochs"]
    if start is None or epoch < start:
        return 1.0
    return max(end - epoch, 0.0) / (end - start)

"""Checkpoint and small-file I/O that never leaves a half-written file behind.

Writes go to a temporary file in the same folder, are flushed and fsynced, then renamed over
the target: a crash leaves either the old file or the new one. Loading uses
torch.load(weights_only=True), so a checkpoint cannot run code; we only ever save tensors,
numbers, strings, lists and dicts.
"""

import json
import math
import os
import tempfile
from pathlib import Path

import torch

from common.errors import UserError


def atomic_write(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results should be readable like any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(state: dict, path) -> None:
    """Atomically save a dict of tensors / plain values."""
    atomic_write(Path(path), lambda handle: torch.save(state, handle))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint written by save_checkpoint; refuses anything that would run code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean "not a safe, whole checkpoint"
        raise UserError(
            f"checkpoint '{path}' cannot be loaded safely ({type(err).__name__}: "
            f"{str(err).partition(chr(10))[0][:200]}); it is corrupt or not ours"
        ) from None


def _finite(data):
    """NaN and infinities as null: JSON has no such numbers (json.dumps would write NaN)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def write_json(data, path) -> None:
    """Atomically write pretty, strict JSON (a non-finite number is written as null)."""
    text = json.dumps(_finite(data), indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(Path(path), lambda handle: handle.write(text.encode()))

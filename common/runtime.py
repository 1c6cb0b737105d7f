"""Seeding, threads, device choice and the training precision."""

import random

import numpy as np
import torch

from common import distributed
from common.errors import UserError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; or an explicit 'cpu', 'cuda', 'cuda:1'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"run.device '{name}' is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("run.device asks for CUDA but no GPU is visible; use run.device=cpu")
    return device


def setup(cfg: dict):
    """Threads, seed, torchrun process group and device of a run: (group, device)."""
    if cfg["run"]["threads"] > 0:
        torch.set_num_threads(cfg["run"]["threads"])
    seed_everything(cfg["run"]["seed"])
    group, device_name = distributed.init(cfg["run"]["device"])
    distributed.check_divisible(cfg["train"], group.world)
    return group, pick_device(device_name)


def bf16_autocast(amp: str, device: torch.device) -> bool:
    """Whether training forward passes run in bf16 autocast under train.amp (auto | bf16 |
    off): `auto` means wherever the device computes bf16 natively."""
    return amp == "bf16" or (amp == "auto" and native_bf16(device))


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 in hardware: CUDA GPUs from Ampere on, CPUs with
    AVX512-BF16 or AMX. There bf16 autocast is faster; elsewhere it is emulated and slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def rng_state() -> dict:
    """Every RNG state a training step uses, as tensors (loadable with weights_only=True)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

"""Data-parallel training across processes (torchrun), the same script with or without it.

    torchrun --nproc_per_node=4 dsprites/train.py ...

Every rank draws the *global* batch's randomness from the same seeded generator (batch
order, labelled picks, prior samples, augmentation) and keeps its own slice, so N processes
compute exactly the gradient of one process with the same global batch, up to the order of
floating-point sums. Gradients are averaged with one all-reduce per optimiser step (the
adversarial step runs the discriminator several times per update, which a
DistributedDataParallel wrapper would not allow). Batch normalisation uses the statistics of
the global batch too (synchronise_batch_norm). Rank 0 alone writes the run folder.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from common.errors import UserError


@dataclass
class Group:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, tensor):
        """This rank's contiguous slice of a global batch (dim 0)."""
        if self.world == 1:
            return tensor
        return tensor.tensor_split(self.world)[self.rank]

    def average_gradients(self, params) -> None:
        """Mean of each parameter's gradient over ranks, in one flat all-reduce."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, values: dict) -> dict:
        """Average a dict of scalar tensors over ranks (for logging)."""
        if self.world == 1 or not values:
            return values
        keys = sorted(values)
        stacked = torch.stack([values[k].detach().float() for k in keys])
        dist.all_reduce(stacked)
        return dict(zip(keys, stacked / self.world))

    def any(self, flags: list[bool], device) -> list[bool]:
        """Each flag, true if it is true on any rank (one all-reduce; none alone)."""
        if self.world == 1:
            return flags
        tensor = torch.tensor(flags, dtype=torch.float32, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [bool(v) for v in tensor.tolist()]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def synchronise_batch_norm(self, module: nn.Module, device: torch.device) -> nn.Module:
        """module with every BatchNorm2d normalising by the global batch's statistics, so N
        processes train like one: nn.SyncBatchNorm on CUDA, GlobalBatchNorm2d elsewhere (the
        library's refuses CPU tensors). Parameters, buffers and state_dict keys stay the same,
        so checkpoints load into the plain model."""
        if self.world == 1:
            return module
        if device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(module)
        for layer in module.modules():
            if type(layer) is nn.BatchNorm2d:
                layer.__class__ = GlobalBatchNorm2d  # same state, a synchronised forward
        return module

    def broadcast_parameters(self, modules) -> None:
        if self.world == 1:
            return
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) that autograd follows: each rank's share of the sum receives the sum of
    every rank's gradient, as the one-process graph would give it."""

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's, over every process of
    the group, on any device (CPU processes on gloo included). Each process's mean and
    variance (torch.var_mean, numerically stable) are gathered by one all-reduce and combined
    as parallel variances are (Chan et al.), as nn.SyncBatchNorm does; in eval mode, or alone,
    it is BatchNorm2d."""

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        channels, world, rank = x.shape[1], dist.get_world_size(), dist.get_rank()
        values = x.float()
        var, mean = torch.var_mean(values, dim=(0, 2, 3), correction=0)
        count = torch.full((1,), x.numel() // channels, dtype=values.dtype, device=x.device)
        mine = torch.cat([mean, var, count])
        rows = _SumOverRanks.apply(torch.stack(  # row r: process r's statistics
            [mine if r == rank else torch.zeros_like(mine) for r in range(world)]))
        means, variances, counts = rows[:, :channels], rows[:, channels:-1], rows[:, -1:]
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        var = (counts * (variances + (means - mean).square())).sum(0) / n
        with torch.no_grad():  # as BatchNorm2d: running variance unbiased, momentum 0.1
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1), self.momentum)
        shape = (1, channels, 1, 1)
        scale = torch.rsqrt(var + self.eps) * self.weight
        out = (values - mean.view(shape)) * scale.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def init(device_name: str):
    """Join the torchrun process group if launched by torchrun; returns (group, device name)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group(), device_name
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"
    return Group(rank=dist.get_rank(), world=dist.get_world_size()), device_name


def check_divisible(cfg_train: dict, world: int) -> None:
    for key in ("batch_size", "labelled_batch_size", "rel_batch_size"):
        if cfg_train[key] % world:
            raise UserError(
                f"train.{key}={cfg_train[key]} must be divisible by the {world} processes"
            )


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

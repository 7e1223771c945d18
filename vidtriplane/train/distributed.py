"""Data-parallel training over processes (``torchrun``): process group, synchronised BatchNorm, gradients.

    vidtriplane train ...                                     # one process
    torchrun --nproc_per_node 8 -m vidtriplane.cli train ...  # 8 processes, env:// rendezvous

Each process takes ``batch_size / world`` samples of every step. Three things make N processes compute
what one process computes with the whole batch:

1. the trunk BatchNorms normalise with the statistics of the *whole* batch: :class:`SyncBatchNorm2d`
   all-reduces (sum, sum of squares, count) in the forward pass and the gradients of those sums in the
   backward pass. ``torch.nn.SyncBatchNorm`` refuses CPU tensors (torch 2.13: "expected input tensor to
   be on GPU"), so this small equivalent is used on every backend (gloo on the CPU, NCCL on CUDA);
2. gradients are averaged over the processes before each optimiser step (:func:`average_gradients`,
   one flat all-reduce per branch; what ``DistributedDataParallel`` does, without overlapping the
   communication with the backward pass, which keeps the two branches' separate backward passes simple);
3. the parameters start equal (:func:`broadcast_state` from rank 0).

The loss of each process is the mean over its own samples, so the averaged gradient is the gradient of
the mean over the whole batch. Only rank 0 logs and writes checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass(frozen=True)
class Processes:
    """Where this process stands in the group (world 1 = no group)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_processes(device: torch.device) -> Processes:
    """Join the process group that ``torchrun`` describes in the environment (env:// rendezvous; gloo on the
    CPU, NCCL on CUDA). Without ``WORLD_SIZE`` > 1 (or with a group already set up) nothing is started."""
    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return Processes(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)))


def close_processes(procs: Processes) -> None:
    """Leave the process group this module started."""
    if procs.distributed and dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the backward pass sums the incoming gradients the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics cover the whole batch of every process (same keys,
    same running-statistics update as one process with the combined batch). Without a process group, or
    in eval mode, it is a plain BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        # 1. local sums in float32, then sums over the processes (differentiable)
        xf = x.float()
        count = torch.full((1,), xf.numel() / xf.shape[1], dtype=torch.float32, device=x.device)
        local = torch.cat([xf.sum(dim=(0, 2, 3)), xf.square().sum(dim=(0, 2, 3)), count])
        total = _AllReduceSum.apply(local)
        c = xf.shape[1]
        n = total[2 * c]
        mean = total[:c] / n
        var = total[c:2 * c] / n - mean.square()
        # 2. running statistics (unbiased variance), exactly like nn.BatchNorm2d
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        # 3. normalise
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d under ``module`` for :class:`SyncBatchNorm2d` (tensors shared, keys unchanged)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = SyncBatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine,
                                  track_running_stats=child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            sync_batchnorm(child)
    return module


def average_gradients(params: Iterable[torch.Tensor], procs: Processes) -> None:
    """Replace each gradient by its mean over the processes (one flat all-reduce)."""
    if not procs.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= procs.world
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def broadcast_state(module: nn.Module, procs: Processes) -> None:
    """Copy rank 0's parameters and buffers to every process."""
    if not procs.distributed:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def mean_over_processes(values: Mapping[str, float], procs: Processes, device: torch.device) -> dict[str, float]:
    """Average logged numbers over the processes (every process must pass the same keys)."""
    if not procs.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / procs.world for k, v in zip(keys, t.tolist())}


def barrier(procs: Processes) -> None:
    if procs.distributed:
        dist.barrier()


__all__ = ["Processes", "SyncBatchNorm2d", "average_gradients", "barrier", "broadcast_state", "close_processes",
           "init_processes", "mean_over_processes", "sync_batchnorm"]

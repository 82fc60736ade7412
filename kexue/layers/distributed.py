r"""Gather a batch across processes with gradients, so that in-batch losses see the global batch.

With N processes each holding a slice :math:`x_r` of the global batch :math:`X = [x_0; \dots; x_{N-1}]`,
:func:`all_gather_with_grad` returns :math:`X` on every rank. If every rank then computes the same
loss :math:`L(X)`, its gradient with respect to rank r's slice is :math:`\partial L/\partial x_r`; the backward
all-reduces (sums) the incoming gradient, giving :math:`N\,\partial L/\partial x_r` on rank r, and DDP's
averaging of the parameter gradients divides by N again: the N processes end with exactly the
gradients of one process holding :math:`X` (more generally, of the mean of the ranks' losses).
Slices may differ in size (the last batch of an epoch); only dim 0 may differ.

Without an initialised process group of more than one process both functions return ``x`` itself.
Every rank must call them, in the same order (they are collective).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Processes in the default group; 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _gather_sizes(x: Tensor) -> list[int]:
    """Every rank's shape, checked to differ only along dim 0; returns the dim-0 sizes."""
    if x.dim() > 7:
        raise ValueError(f"all_gather: at most 7 dimensions, got {x.dim()}")
    shape = torch.tensor([x.dim(), *x.shape, *([0] * (7 - x.dim()))], dtype=torch.int64, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size())]
    dist.all_gather(shapes, shape)
    shapes = [tuple(s[1:1 + int(s[0])].tolist()) for s in shapes]
    if any(s[1:] != tuple(x.shape[1:]) or len(s) != x.dim() for s in shapes):
        raise ValueError(f"all_gather: the ranks' tensors must match beyond dim 0, got shapes {shapes}")
    return [s[0] for s in shapes]


def _gather(x: Tensor, sizes: list[int]) -> Tensor:
    x = x.contiguous()
    most = max(sizes)
    if x.shape[0] < most:  # all_gather needs equal shapes: pad, then cut each rank's rows back out
        x = torch.cat([x, x.new_zeros((most - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        sizes = _gather_sizes(x)
        ctx.start = sum(sizes[:rank()])
        ctx.n = x.shape[0]
        return _gather(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's loss may depend on this rank's rows
        return grad[ctx.start:ctx.start + ctx.n]


def all_gather(x: Tensor) -> Tensor:
    """The ranks' ``x`` concatenated along dim 0 in rank order, without gradient (labels, masks)."""
    if world_size() == 1:
        return x
    flag = x.dtype == torch.bool  # not every backend gathers booleans
    out = _gather(x.to(torch.uint8) if flag else x.detach(), _gather_sizes(x))
    return out.bool() if flag else out


def all_gather_with_grad(x: Tensor) -> Tensor:
    """The ranks' ``x`` concatenated along dim 0 in rank order; gradients flow back to each rank's own
    rows, summed over the ranks (see the module doc: correct under DDP's gradient averaging)."""
    if world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)

"""RoPE-Tie: rotary positions for mixed text and image input (《Transformer升级之路：17、多模态位置编码的简单思考》).

    R_{x,y} = diag(R_x, R_y):  channel pair i rotates by  x·θ_i  (i even)  or  y·θ_i  (i odd),
    θ_i = base^{-2i/d} the RoPE-1D frequencies.

RoPE-2D gives every token a 2-D position (x, y). RoPE-Tie splits RoPE-1D's own frequencies
between the two axes, so a text token placed on the diagonal, (n, n), is rotated exactly as RoPE-1D
rotates position n: text-only input *is* RoPE-1D, and an image alone is RoPE-2D on its grid.

Positions of a mixed sequence (text positions count from 0; L is the position of the text token
before the image, -1 at the start):

    text token                      (n, n)
    image of h rows × w columns     patch (i, j), i = 1…h, j = 1…w  ->  (L + i·(w+1), L + j·(h+1))
    first text token after it       (K, K),  K = L + (w+1)(h+1)

The scales s = w+1 (rows) and t = h+1 (columns) make the step from the text before the image to
its first patch, (s, t), equal to the step from its last patch to the text after it, whatever
w ≠ h: the image sits symmetrically between its neighbours, and a w×h image counts as
(w+1)(h+1) - 1 tokens of distance between the sentences around it (the post's integer solution).
Wrap images in [IMG] … [/IMG] text tokens to keep two images from being adjacent, as the post advises.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from kexue.layers.positions import RotaryEmbedding


def rope_tie_positions(parts: Sequence[int | tuple[int, int]], start: int = 0) -> Tensor:
    """``[L, 2]`` integer positions for a sequence of parts: an ``int`` n is n text tokens, a pair
    ``(h, w)`` is an image of h rows × w columns of patches flattened row by row.

    >>> rope_tie_positions([2, (2, 3), 1]).tolist()
    [[0, 0], [1, 1], [5, 4], [5, 7], [5, 10], [9, 4], [9, 7], [9, 10], [13, 13]]
    """
    last, out = start - 1, []
    for k, part in enumerate(parts):
        if isinstance(part, int) and not isinstance(part, bool):
            if part < 0:
                raise ValueError(f"part {k}: a text length must be >= 0, got {part}")
            n = torch.arange(last + 1, last + 1 + part)
            out.append(torch.stack([n, n], dim=-1))
            last += part
        elif isinstance(part, (tuple, list)) and len(part) == 2 and all(isinstance(v, int) and v > 0 for v in part):
            h, w = part
            rows = torch.arange(1, h + 1).repeat_interleave(w)
            cols = torch.arange(1, w + 1).repeat(h)
            out.append(torch.stack([last + rows * (w + 1), last + cols * (h + 1)], dim=-1))
            last += (w + 1) * (h + 1) - 1  # the next text token lands on last + (w+1)(h+1)
        else:
            raise ValueError(f"part {k}: expected a text length (int) or an image grid (rows, cols), got {part!r}")
    return torch.cat(out) if out else torch.zeros(0, 2, dtype=torch.long)


class RoPETie(RotaryEmbedding):
    """RoPE over ``axes``-dimensional positions with RoPE-1D's frequencies dealt round-robin to the axes.

    ``positions [..., L, axes]`` -> cos, sin ``[..., L, D]``; pair i uses axis ``i % axes``. Plain
    ``[L]`` / ``[B, L]`` positions are text and go through RoPE-1D unchanged (the same numbers as
    ``(n, n)``). ``axes=3`` is the video / 3-D form, with text on (n, n, n).
    """

    def __init__(self, head_dim: int, base: float = 10000.0, interleaved: bool = True, axes: int = 2):
        super().__init__(head_dim, base, interleaved)
        if axes < 2 or head_dim // 2 < axes:
            raise ValueError(f"RoPE-Tie needs 2 <= axes <= head_dim/2, got axes={axes}, head_dim={head_dim}")
        self.axes = axes

    def forward(self, positions: Tensor, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        if positions.dim() <= 2:
            return super().forward(positions, dtype)
        if positions.shape[-1] != self.axes:
            raise ValueError(f"RoPE-Tie with {self.axes} axes takes positions [..., L, {self.axes}], "
                             f"got {tuple(positions.shape)}")
        pair_axis = torch.arange(self.head_dim // 2, device=positions.device) % self.axes
        per_pair = positions.to(torch.float64).index_select(-1, pair_axis)  # [..., L, D/2]
        return self.cos_sin(per_pair * self.inv_freq(positions.device), dtype)


def rope_tie_axes(option) -> int | None:
    """The config option ``rope_tie``: false/None (off), true (2-D: text + images) or 2 / 3 (axes)."""
    if option is None or option is False:
        return None
    if option is True:
        return 2
    if isinstance(option, int) and option in (2, 3):
        return option
    raise ValueError(f"config option rope_tie must be true/false or the number of axes (2 or 3), got {option!r}")


def rotary_for(head_dim: int, base: float, interleaved: bool, rope_tie=None) -> RotaryEmbedding:
    """RoPE-1D, or RoPE-Tie when the config asks for it (identical on text-only positions)."""
    axes = rope_tie_axes(rope_tie)
    if axes is None:
        return RotaryEmbedding(head_dim, base, interleaved)
    return RoPETie(head_dim, base, interleaved, axes)


@contextlib.contextmanager
def patch_embeddings(token_embedding: nn.Module, vectors: Tensor, where: Tensor) -> Iterator[None]:
    """Feed patch vectors into a text model: inside the block, rows of ``token_embedding``'s output
    where ``where [B, L]`` is True are replaced by ``vectors [B, L, dim]`` (placeholder token ids
    stand at those places in ``input_ids``). Everything after the lookup (segment embeddings, the
    embedding norm, the layers) is the model's own, so text and patches share one network."""
    if vectors.shape[:2] != where.shape:
        raise ValueError(f"patch vectors {tuple(vectors.shape)} do not match the patch mask {tuple(where.shape)}")

    def hook(module, args, out):
        if out.shape[:2] != where.shape or out.shape[-1] != vectors.shape[-1]:
            raise ValueError(f"patch vectors {tuple(vectors.shape)} do not fit the token embeddings {tuple(out.shape)}")
        return torch.where(where[..., None], vectors.to(out.dtype), out)

    handle = token_embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()

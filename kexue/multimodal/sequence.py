"""Interleaved text + image sequences: patches, RoPE-Tie positions and the attention pattern.

《“闭门造车”之多模态思路浅谈（一）：无损输入》: an image enters the Transformer as its patches, each patch a
continuous vector (a reshape of the pixels, nothing thrown away), beside the text tokens of the same sequence.
《Transformer升级之路：17、多模态位置编码的简单思考》 gives the positions: text on the diagonal (n, n), the
patches of an h×w image on its grid, scaled so that the image sits symmetrically between the text around it
(:func:`kexue.layers.rope_tie.rope_tie_positions`)::

    text token                     (n, n)
    patch (i, j), i ≤ h, j ≤ w     (L + i·(w+1), L + j·(h+1))      L: position of the text token before the image
    text after the image           (K, K),  K = L + (w+1)(h+1)

Attention (who sees whom) — text is generated token by token, an image all at once by the flow:

* a text token sees every token before it (text, and whole earlier images) and itself;
* a patch sees everything before its image and every patch of its own image (both ways), nothing after.

That is the UniLM prefix rule of 《从语言模型到Seq2Seq：Transformer如戏，全靠Mask》 with segment ids
s = 1 at every text token and at the first patch of each image, s = 0 at the other patches: with
c = cumsum(s), query i sees key j iff c_j ≤ c_i (:func:`kexue.layers.masks.unilm_mask`), because the
patches of one image share one c and every later text token or image raises it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence, Union

import torch
from torch import Tensor

from kexue.layers.masks import unilm_mask
from kexue.layers.rope_tie import rope_tie_positions

Part = Union[list[int], tuple[int, int]]  # text token ids (a list), or an image grid (rows, columns) of patches


def patchify(images: Tensor, patch: int) -> Tensor:
    """``[N, C, H, W]`` -> ``[N, (H/p)(W/p), C·p·p]``: p×p patches row by row, each flattened channel-first.
    A reshape: :func:`unpatchify` gives the images back exactly (the post's lossless input)."""
    n, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"images of {h}×{w} pixels do not split into {patch}×{patch} patches")
    x = images.reshape(n, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(patches: Tensor, grid: tuple[int, int], patch: int, channels: int) -> Tensor:
    """The inverse of :func:`patchify`: ``[N, h·w, C·p·p]`` -> ``[N, C, h·p, w·p]``."""
    rows, cols = grid
    n = patches.shape[0]
    if patches.shape[1:] != (rows * cols, channels * patch * patch):
        raise ValueError(f"patches {tuple(patches.shape)} do not fit a {rows}×{cols} grid of "
                         f"{channels}×{patch}×{patch}")
    x = patches.reshape(n, rows, cols, channels, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, channels, rows * patch, cols * patch)


@dataclass(frozen=True)
class Layout:
    """One interleaved sequence of length L (every field has L rows)."""

    ids: Tensor        # [L] token ids; patch places hold a placeholder id (their embedding is replaced)
    is_patch: Tensor   # [L] bool
    image: Tensor      # [L] index of the image a patch belongs to (0, 1, ...), -1 at text
    positions: Tensor  # [L, 2] RoPE-Tie positions
    segments: Tensor   # [L] the attention pattern as UniLM segment ids (see the module docstring)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_image(part: Part) -> bool:
    """An image part is a tuple ``(rows, cols)``; a text part is a list of token ids."""
    return isinstance(part, tuple) and len(part) == 2 and all(map(_is_int, part))


def interleave(parts: Sequence[Part], placeholder_id: int, image_attention: str = "bidirectional") -> Layout:
    """The :class:`Layout` of text parts (lists of token ids) and images (a tuple ``(rows, cols)``) in order.

    ``image_attention="causal"`` makes every patch a segment of its own, so patches see only the patches
    before them (an image of discrete tokens generated one by one, :mod:`kexue.multimodal.vq`).

    >>> lay = interleave([[2, 7], (2, 2), [3]], placeholder_id=4)
    >>> lay.ids.tolist(), lay.segments.tolist()
    ([2, 7, 4, 4, 4, 4, 3], [1, 1, 1, 0, 0, 0, 1])
    """
    if image_attention not in ("bidirectional", "causal"):
        raise ValueError(f"image_attention must be 'bidirectional' or 'causal', got {image_attention!r}")
    first_only = image_attention == "bidirectional"
    ids, patch, image, segments, sizes = [], [], [], [], []
    n_images = 0
    for k, part in enumerate(parts):
        if is_image(part):
            rows, cols = part
            if rows < 1 or cols < 1:
                raise ValueError(f"part {k}: an image grid needs at least one row and column, got {part}")
            n = rows * cols
            ids += [placeholder_id] * n
            patch += [True] * n
            image += [n_images] * n
            segments += [1] + [0 if first_only else 1] * (n - 1)
            sizes.append((rows, cols))
            n_images += 1
        elif isinstance(part, list) and all(map(_is_int, part)):
            ids += list(part)
            patch += [False] * len(part)
            image += [-1] * len(part)
            segments += [1] * len(part)
            sizes.append(len(part))
        else:
            raise ValueError(f"part {k}: expected text token ids (a list of ints) or an image grid (a tuple "
                             f"(rows, cols)), got {part!r}")
    return Layout(torch.tensor(ids, dtype=torch.long), torch.tensor(patch, dtype=torch.bool),
                  torch.tensor(image, dtype=torch.long), rope_tie_positions(sizes),
                  torch.tensor(segments, dtype=torch.long))


@dataclass(frozen=True)
class Batch:
    """Layouts right-padded to one length: every field ``[B, L]`` (positions ``[B, L, 2]``)."""

    ids: Tensor
    is_patch: Tensor
    image: Tensor
    positions: Tensor
    segments: Tensor
    attention_mask: Tensor  # [B, L] 1 for real tokens

    @property
    def text(self) -> Tensor:
        """[B, L] bool: real text tokens."""
        return ~self.is_patch & self.attention_mask.bool()

    def next_text(self) -> Tensor:
        """[B, L] bool: positions t whose next token t + 1 is text (and t too): where next-token prediction
        applies. A patch is never a target (the flow generates it), and the token before an image predicts
        nothing."""
        both = self.text[:, :-1] & self.text[:, 1:]
        return torch.cat([both, torch.zeros_like(both[:, :1])], dim=1)

    def mask(self) -> Tensor:
        """``[B, 1, L, L]`` bool, True where query i may attend to key j (padding keys excluded)."""
        return unilm_mask(self.segments) & self.attention_mask.bool()[:, None, None, :]


def collate(layouts: Sequence[Layout], pad_id: int) -> Batch:
    """Right-pad layouts into a :class:`Batch` (pads: ``pad_id``, segment 1, position 0, masked out as keys)."""
    if not layouts:
        raise ValueError("collate needs at least one sequence")
    length = max(len(lay.ids) for lay in layouts)
    fill = {"ids": pad_id, "is_patch": False, "image": -1, "positions": 0, "segments": 1}
    out = {}
    for f in fields(Layout):
        rows = []
        for lay in layouts:
            v = getattr(lay, f.name)
            pad = v.new_full((length - len(v), *v.shape[1:]), fill[f.name])
            rows.append(torch.cat([v, pad]))
        out[f.name] = torch.stack(rows)
    attention = torch.zeros(len(layouts), length, dtype=torch.long)
    for row, lay in enumerate(layouts):
        attention[row, :len(lay.ids)] = 1
    return Batch(**out, attention_mask=attention)


def place_patches(batch: Batch, patches: Sequence[Tensor]) -> Tensor:
    """``[B, L, P]``: the patch vectors of every image, ``patches[b]`` ``[n_images_b, h·w, P]`` (images in
    order), written at their places in row b; zeros at text."""
    dim = patches[0].shape[-1]
    out = torch.zeros(*batch.ids.shape, dim, dtype=patches[0].dtype, device=patches[0].device)
    for row, p in enumerate(patches):
        where = batch.is_patch[row]
        flat = p.reshape(-1, dim)
        if flat.shape[0] != int(where.sum()):
            raise ValueError(f"row {row}: {flat.shape[0]} patch vectors for {int(where.sum())} patch places")
        out[row, where] = flat
    return out


__all__ = ["Batch", "Layout", "Part", "collate", "interleave", "is_image", "patchify", "place_patches", "unpatchify"]

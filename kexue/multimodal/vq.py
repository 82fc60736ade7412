"""The lossy alternative the post argues against: images as discrete tokens of a VQ codebook.

《“闭门造车”之多模态思路浅谈（一）：无损输入》 contrasts feeding patches losslessly (and generating them with a
diffusion model) with the usual route of discretising an image through a VQ tokenizer and treating the codes like
words. This module builds that route with the same Transformer, so the two can be compared at equal size:

* the tokenizer: k-means over the training patches (Lloyd's algorithm, k-means++ seeding), a codebook
  {c_1 … c_K}; a patch p becomes the code argmin_k ||p - c_k||² and is decoded as c_k — K codes per patch is
  16·log2 K bits per 4×4-patch image, and whatever the codebook cannot express is lost on the way in and out;
* input: the code's learned embedding at the patch place (instead of W_in x + MLP(sin t));
* generation: next-token prediction over the codes in raster order (patches see only earlier patches), sampled
  one code at a time; understanding: the captioner reads the codes of the image.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.models import Transformer
from kexue.multimodal.model import ImageSpec, MultimodalTransformer, text_targets, training_batch
from kexue.multimodal.sequence import patchify, place_patches, unpatchify


def kmeans_plusplus(x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """k-means++ seeding: the first centre uniform, each next one drawn with probability ∝ D(x)², the squared
    distance to the nearest centre so far."""
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be in [1, {len(x)}] (the number of points), got {k}")
    centres = [x[torch.randint(len(x), (1,), generator=generator)].squeeze(0)]
    d2 = (x - centres[0]).pow(2).sum(1)
    for _ in range(k - 1):
        weights = d2 if d2.sum() > 0 else torch.ones_like(d2)
        c = x[torch.multinomial(weights, 1, generator=generator)].squeeze(0)
        centres.append(c)
        d2 = torch.minimum(d2, (x - c).pow(2).sum(1))
    return torch.stack(centres)


def assign(x: Tensor, centres: Tensor) -> Tensor:
    """argmin_k ||x_i - c_k||² for every row (ties: the lowest k)."""
    return torch.cdist(x.double(), centres.double()).argmin(1)


def kmeans(x: Tensor, k: int, iters: int = 50, init: Tensor | None = None, seed: int = 0) -> Tensor:
    """Lloyd's algorithm from ``init`` (default: :func:`kmeans_plusplus` with ``seed``) for at most ``iters``
    rounds (stops when no point changes cluster): centres ``[k, D]``. An emptied cluster keeps its centre."""
    x = x.double()
    centres = (kmeans_plusplus(x, k, torch.Generator().manual_seed(seed)) if init is None else init.double()).clone()
    labels = None
    for _ in range(iters):
        new = assign(x, centres)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres.float()


class PatchCodebook(nn.Module):
    """A fixed patch codebook ``[K, P]`` (a buffer): :meth:`encode` patches -> codes, :meth:`decode` back."""

    def __init__(self, centres: Tensor):
        super().__init__()
        self.register_buffer("centres", centres.float().clone())

    @property
    def size(self) -> int:
        return self.centres.shape[0]

    def encode(self, patches: Tensor) -> Tensor:
        return assign(patches.reshape(-1, patches.shape[-1]), self.centres).view(patches.shape[:-1])

    def decode(self, codes: Tensor) -> Tensor:
        return self.centres[codes]


def fit_codebook(images: Tensor, spec: ImageSpec, size: int, iters: int = 50, seed: int = 0) -> PatchCodebook:
    """k-means over every patch of ``images`` (the VQ tokenizer at ``size`` codes)."""
    return PatchCodebook(kmeans(patchify(images, spec.patch).reshape(-1, spec.patch_dim), size, iters, seed=seed))


class VQMultimodal(MultimodalTransformer):
    """:class:`MultimodalTransformer` with images as codebook tokens: ``code_in`` embeds a code, ``code_out``
    predicts the next patch's code; patches attend causally (autoregressive generation)."""

    image_attention = "causal"

    def __init__(self, backbone: Transformer, image: ImageSpec, ids: dict[str, int], codebook: PatchCodebook):
        self._codes = codebook.size
        super().__init__(backbone, image, ids)
        self.codebook = codebook

    def build_image_maps(self, d: int) -> None:
        self.code_in = nn.Embedding(self._codes, d)
        self.code_out = nn.Linear(d, self._codes)

    def embed_patches(self, x: Tensor, t: Tensor | None) -> Tensor:
        return self.code_in(x[..., 0].long())

    def image_values(self, images: Tensor) -> Tensor:
        """``[N, 1, h·w, 1]``: the codes of every patch."""
        return self.codebook.encode(patchify(images, self.image.patch))[:, None, :, None]


def next_patch_places(batch, rows: Tensor) -> Tensor:
    """[B, L] bool: in the rows selected by ``rows``, the positions whose next token is a patch (the token
    before the image and every patch but the last): where the next code is predicted."""
    nxt = torch.roll(batch.is_patch, -1, dims=1)
    nxt[:, -1] = False
    return nxt & rows[:, None]


def vq_batch_loss(model: VQMultimodal, images: Tensor, captions: Sequence[list[int]], generate: Tensor,
                  image_weight: float = 1.0) -> dict[str, Tensor]:
    """Next-token CE on text plus ``image_weight`` × next-code CE on the images of the ``generate`` rows."""
    batch, codes = training_batch(model, images, captions, generate)
    where, targets = text_targets(batch)
    out = model(batch, codes, None, logits_mask=where)
    text = F.cross_entropy(out.logits, targets) if targets.numel() else out.hidden.sum() * 0
    at = next_patch_places(batch, generate)
    if at.any():
        target_codes = torch.roll(codes[..., 0], -1, dims=1)[at]
        image = F.cross_entropy(model.code_out(out.hidden[at]), target_codes)
    else:
        image = out.hidden.sum() * 0
    return {"loss": text + image_weight * image, "text": text.detach(), "image": image.detach()}


@torch.no_grad()
def generate_images_vq(model: VQMultimodal, prompts: Sequence[list[int]], temperature: float = 1.0,
                       generator: torch.Generator | None = None) -> Tensor:
    """Images for prompts: the codes sampled one patch at a time (h·w forward passes) at ``temperature``,
    decoded through the codebook."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    spec = model.image
    batch = model.collate([model.generation_layout(p) for p in prompts])
    n, m = len(prompts), spec.n_patches
    first = batch.is_patch.float().argmax(1)  # the first patch of each row
    codes = torch.zeros(n, m, dtype=torch.long)
    rows = torch.arange(n)
    for k in range(m):
        out = model(batch, place_patches(batch, codes[:, None, :, None]), None)
        logits = model.code_out(out.hidden[rows, first - 1 + k]) / temperature
        codes[:, k] = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
    return unpatchify(model.codebook.decode(codes), spec.grid, spec.patch, spec.channels).clamp(-1, 1)


__all__ = ["PatchCodebook", "VQMultimodal", "assign", "fit_codebook", "generate_images_vq", "kmeans",
           "kmeans_plusplus", "next_patch_places", "vq_batch_loss"]

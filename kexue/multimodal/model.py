"""One Transformer for text and images: next-token prediction on text, a rectified flow on image patches.

《“闭门造车”之多模态思路浅谈（一）：无损输入》: the image is not squeezed through a lossy tokenizer (VQ); its
patches enter as they are (a reshape of the pixels), so whatever the model is asked about the image is all
there, and images are *generated* by a diffusion model inside the same Transformer: the input patches are
noised and the outputs at the patch places are the denoising target. Text stays a language model. Positions
are RoPE-Tie (《Transformer升级之路：17、多模态位置编码的简单思考》), text 1-D on the diagonal, patches 2-D
(:mod:`kexue.multimodal.sequence`).

The image part is a rectified flow (:mod:`kexue.losses.flow_matching`). With x_1 the clean patches, x_0 ~ N(0, I)
and t ~ U(0, 1) one noise level per image,

    input at a patch      e = W_in x_t + MLP(sin(1000 t)),       x_t = (1 - t) x_0 + t x_1
    output at a patch     v_θ = W_out h                           (the velocity of x_t)
    L = CE(next text token) + λ · mean || v_θ - (x_1 - x_0) ||²

The noise level t is an input beside the patch, so the same network reads a clean image (t = 1, x_t = x_1:
the lossless input of understanding) and denoises a noisy one (generation). Text tokens are predicted at
every text position whose next token is text; a patch is never a classification target.

* text -> image: ``[CLS] prompt [IMG] x_t`` — the patches see the prompt and each other; Euler integration
  of dx/dt = v_θ(x, t) from t = 0 (noise) to 1 gives the image;
* image -> text: ``[CLS] [IMG] x_1 [/IMG] caption [SEP]`` at t = 1, the caption decoded greedily.

The backbone is a kexue RoFormer (``application="unilm"``, ``rope_tie=True``) whose segment ids carry the
attention pattern; ``head.safetensors``-style extra weights are ``patch_in``, ``noise_in`` and ``velocity_out``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.layers.rope_tie import patch_embeddings
from kexue.losses.flow_matching import flow_interpolate, flow_matching_loss, sample_euler
from kexue.models import Transformer, TransformerOutput, build_model
from kexue.multimodal.sequence import Batch, Layout, collate, interleave, patchify, place_patches, unpatchify

IMG, END_IMG = "[IMG]", "[/IMG]"


def noise_features(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Sinusoids of scale·t, ``[..., dim]``: [sin(scale·t·f_k), cos(scale·t·f_k)], f_k = 10000^(-k/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = scale * t.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


@dataclass(frozen=True)
class ImageSpec:
    """How images become patches: ``channels`` × ``size`` × ``size`` pixels in [-1, 1], ``patch`` × ``patch``
    patches, a grid of (size/patch)² patches of dimension channels·patch²."""

    size: int
    patch: int
    channels: int = 1

    def __post_init__(self):
        if self.size < 1 or self.patch < 1 or self.size % self.patch:
            raise ValueError(f"image size {self.size} must be a positive multiple of the patch size {self.patch}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    @property
    def grid(self) -> tuple[int, int]:
        return (self.size // self.patch, self.size // self.patch)

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch * self.patch

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]


def build_backbone(vocab_size: int, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                   intermediate_size: int | None = None) -> Transformer:
    """A small RoFormer with RoPE-Tie positions and the UniLM (segment-driven) mask, no dropout."""
    config = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=num_heads, intermediate_size=intermediate_size or 2 * hidden_size,
                  max_position_embeddings=512, type_vocab_size=0, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, model_type="roformer", rope_tie=True)
    return build_model(config, application="unilm")


class MultimodalTransformer(nn.Module):
    """The backbone plus the patch input (``patch_in``, ``noise_in``) and output (``velocity_out``) maps.

    ``ids``: the special token ids (``pad``, ``cls``, ``sep``, ``placeholder``, ``img``, ``end_img``) of the
    tokenizer the backbone's vocabulary comes from."""

    image_attention = "bidirectional"

    def __init__(self, backbone: Transformer, image: ImageSpec, ids: dict[str, int]):
        super().__init__()
        missing = {"pad", "cls", "sep", "placeholder", "img", "end_img"} - set(ids)
        if missing:
            raise ValueError(f"special token ids missing: {sorted(missing)}")
        self.backbone, self.image, self.ids = backbone, image, dict(ids)
        self._layouts: dict[tuple, object] = {}  # layouts depend on the token ids only: built once each
        d = backbone.config.hidden_size
        self.build_image_maps(d)

    def build_image_maps(self, d: int) -> None:
        p = self.image.patch_dim
        self.patch_in = nn.Linear(p, d)
        self.noise_in = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.velocity_out = nn.Linear(d, p)

    # -- sequences -------------------------------------------------------------------------------------
    def _layout(self, parts: list) -> Layout:
        key = tuple(tuple(p) if isinstance(p, list) else ("image", p) for p in parts)
        if key not in self._layouts:
            if len(self._layouts) >= 4096:  # a server sees ever new prompts: keep the cache bounded
                self._layouts.clear()
            self._layouts[key] = interleave(parts, self.ids["placeholder"], self.image_attention)
        return self._layouts[key]

    def generation_layout(self, prompt: list[int]) -> Layout:
        """``[CLS] prompt [IMG] <patches>``."""
        return self._layout([[self.ids["cls"], *prompt, self.ids["img"]], self.image.grid])

    def caption_layout(self, caption: list[int], end: bool = True) -> Layout:
        """``[CLS] [IMG] <patches> [/IMG] caption [SEP]`` (``end=False``: no [SEP], for decoding)."""
        text = [self.ids["end_img"], *caption] + ([self.ids["sep"]] if end else [])
        return self._layout([[self.ids["cls"], self.ids["img"]], self.image.grid, text])

    def collate(self, layouts) -> Batch:
        return collate(layouts, self.ids["pad"])

    # -- the network -----------------------------------------------------------------------------------
    def embed_patches(self, x: Tensor, t: Tensor) -> Tensor:
        """``x [B, L, P]`` patch values, ``t [B, L]`` their noise level -> ``[B, L, hidden]`` input vectors."""
        return self.patch_in(x) + self.noise_in(noise_features(t, self.backbone.config.hidden_size))

    def forward(self, batch: Batch, x: Tensor, t: Tensor, logits_mask: Tensor | None = None) -> TransformerOutput:
        """Run the sequences with patch values ``x [B, L, P]`` at noise levels ``t [B, L]`` (read at patch
        places only). ``logits_mask [B, L]``: where to compute text logits (``out.logits`` is ``[N, vocab]``)."""
        vectors = self.embed_patches(x, t)
        with patch_embeddings(self.backbone.embeddings.token, vectors, batch.is_patch):
            return self.backbone(batch.ids, segment_ids=batch.segments, attention_mask=batch.attention_mask,
                                 position_ids=batch.positions, logits_mask=logits_mask)

    def velocity(self, hidden: Tensor) -> Tensor:
        return self.velocity_out(hidden)

    def image_values(self, images: Tensor) -> Tensor:
        """``[N, C, H, W]`` -> what enters at the patch places, one image per row: ``[N, 1, h·w, P]`` patches."""
        return patchify(images, self.image.patch)[:, None]


def text_targets(batch: Batch) -> tuple[Tensor, Tensor]:
    """(positions that predict a text token [B, L] bool, their target ids [N])."""
    where = batch.next_text()
    targets = torch.roll(batch.ids, -1, dims=1)[where]
    return where, targets


def training_batch(model: MultimodalTransformer, images: Tensor, captions: Sequence[list[int]],
                   generate: Tensor) -> tuple[Batch, Tensor]:
    """Row b: ``generate[b]`` -> ``[CLS] caption_b [IMG] <image_b>`` (text -> image, a flow target), else
    ``[CLS] [IMG] <image_b> [/IMG] caption_b [SEP]`` (image -> text). Returns the batch and the clean patch
    values x_1 placed in it ``[B, L, P]``."""
    layouts = [model.generation_layout(c) if g else model.caption_layout(c)
               for c, g in zip(captions, generate.tolist())]
    batch = model.collate(layouts)
    return batch, place_patches(batch, model.image_values(images))


def multimodal_loss(model: MultimodalTransformer, batch: Batch, x1: Tensor, generate: Tensor, x0: Tensor | None = None,
                    t: Tensor | None = None, flow_weight: float = 1.0) -> dict[str, Tensor]:
    """``{"loss", "text", "flow"}``: next-token CE at the text positions + ``flow_weight`` × velocity MSE at the
    patches of the rows with ``generate`` True. Those rows' patches enter as x_t at the row's noise level ``t``
    (default U(0, 1)) with noise ``x0`` (default N(0, I)); the other rows' images enter clean (t = 1)."""
    b = batch.ids.shape[0]
    if x0 is None:
        x0 = torch.randn_like(x1)
    if t is None:
        t = torch.rand(b, device=x1.device)
    level = torch.where(generate, t, torch.ones_like(t))[:, None].expand(batch.ids.shape)
    xt = flow_interpolate(x0, x1, level)
    where, targets = text_targets(batch)
    out = model(batch, xt, level, logits_mask=where)
    text = F.cross_entropy(out.logits, targets) if targets.numel() else out.hidden.sum() * 0
    flows = batch.is_patch & generate[:, None]
    if flows.any():
        flow = flow_matching_loss(model.velocity(out.hidden[flows]), x0[flows], x1[flows])
    else:
        flow = out.hidden.sum() * 0
    return {"loss": text + flow_weight * flow, "text": text.detach(), "flow": flow.detach()}


def batch_loss(model: MultimodalTransformer, images: Tensor, captions: Sequence[list[int]], generate: Tensor,
               flow_weight: float = 1.0) -> dict[str, Tensor]:
    """:func:`multimodal_loss` of the :func:`training_batch` of ``images`` / ``captions`` (the training step)."""
    batch, x1 = training_batch(model, images, captions, generate)
    return multimodal_loss(model, batch, x1, generate, flow_weight=flow_weight)


@torch.no_grad()
def generate_images(model: MultimodalTransformer, prompts: Sequence[list[int]], steps: int = 20,
                    generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
    """Images ``[N, C, H, W]`` in [-1, 1] for text prompts (token ids): Euler integration of the flow with
    ``steps`` forward passes over ``[CLS] prompt [IMG] x_t`` from x_0 ~ N(0, I) (drawn from ``generator``, or
    ``noise`` ``[N, h·w, P]`` given)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    spec = model.image
    batch = model.collate([model.generation_layout(p) for p in prompts])
    n = len(prompts)
    shape = (n, spec.n_patches, spec.patch_dim)
    if noise is not None and tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
    x0 = torch.randn(shape, generator=generator) if noise is None else noise

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        out = model(batch, place_patches(batch, x[:, None]), t[:, None].expand(batch.ids.shape))
        return model.velocity(out.hidden[batch.is_patch]).view(n, spec.n_patches, spec.patch_dim)

    x = sample_euler(velocity, x0, steps)
    return unpatchify(x, spec.grid, spec.patch, spec.channels).clamp(-1, 1)


@torch.no_grad()
def caption_images(model: MultimodalTransformer, images: Tensor, max_new_tokens: int = 8,
                   banned: Sequence[int] = ()) -> list[list[int]]:
    """Greedy captions (token ids, without [SEP]) of clean images ``[N, C, H, W]``: the image enters at t = 1
    in ``[CLS] [IMG] x_1 [/IMG]`` and text tokens are appended until [SEP] or ``max_new_tokens``."""
    n = images.shape[0]
    x1 = model.image_values(images)
    rows: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    ban = torch.tensor(sorted(set(banned) | {model.ids[k] for k in ("pad", "cls", "placeholder", "img", "end_img")}))
    for _ in range(max_new_tokens):
        batch = model.collate([model.caption_layout(r, end=False) for r in rows])
        last = batch.attention_mask.sum(1) - 1
        where = torch.zeros_like(batch.is_patch)
        where[torch.arange(n), last] = True
        out = model(batch, place_patches(batch, x1), torch.ones(batch.ids.shape), logits_mask=where)
        logits = out.logits.index_fill(1, ban, float("-inf"))
        for i, tok in enumerate(logits.argmax(-1).tolist()):
            if not done[i]:
                if tok == model.ids["sep"]:
                    done[i] = True
                else:
                    rows[i].append(tok)
        if all(done):
            break
    return rows


__all__ = ["END_IMG", "IMG", "ImageSpec", "MultimodalTransformer", "batch_loss", "build_backbone", "caption_images",
           "generate_images", "multimodal_loss", "noise_features", "text_targets", "training_batch"]

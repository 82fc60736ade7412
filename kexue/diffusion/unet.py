"""A compact UNet denoiser f(x, t[, d]) with time and (optional) step-size conditioning.

生成扩散模型漫谈 (all parts use a UNet; the shortcut post feeds the step size d as a second condition).
Each residual block adds a FiLM-style scale/shift from the embedding e = MLP(sin(t)) (+ MLP(sin(d))) (+ E[y] for a
class-conditional model, ``num_classes > 0``):
    h = conv(SiLU(GN(x)));  h = GN(h)·(1 + s(e)) + b(e);  out = x + conv(SiLU(h))
Resolution is halved per level (strided conv) and restored with nearest upsampling + skip concatenation.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Transformer sinusoids of scale·t (t ∈ [0, 1] for every method here), shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = scale * t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # start as identity: stabler early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class UNet(nn.Module):
    """UNet(in_channels, channels, mults, out_channels, step_cond, blocks, num_classes) -> forward(x, t, d=None, y=None).

    ``t`` (and ``d``) are float tensors of shape (B,), nominally in [0, 1].  With ``step_cond=True`` the
    model also embeds the step size d (shortcut models); with ``num_classes > 0`` it adds a learned
    embedding of the class y (long, shape (B,)) to the time embedding (a class-conditional model).
    Spatial size must be divisible by 2^(levels-1).
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, mults: tuple[int, ...] = (1, 2, 2),
                 out_channels: int | None = None, step_cond: bool = False, blocks: int = 1, num_classes: int = 0):
        super().__init__()
        emb_dim = 4 * channels
        self.channels = channels
        self.t_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.d_mlp = (nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                      if step_cond else None)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.class_emb = nn.Embedding(num_classes, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        chs = [channels * m for m in mults]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        cur, skips = channels, []
        for i, ch in enumerate(chs):
            self.down.append(nn.ModuleList([ResBlock(cur if j == 0 else ch, ch, emb_dim) for j in range(blocks)]))
            cur = ch
            skips.append(ch)
            self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1) if i < len(chs) - 1 else nn.Identity())
        self.mid = ResBlock(cur, cur, emb_dim)
        self.up = nn.ModuleList()
        for ch, skip in zip(reversed(chs), reversed(skips)):
            self.up.append(nn.ModuleList([ResBlock(cur + skip if j == 0 else ch, ch, emb_dim) for j in range(blocks)]))
            cur = ch
        self.norm_out = _norm(cur)
        self.conv_out = nn.Conv2d(cur, out_channels or in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, d: torch.Tensor | None = None,
                y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.t_mlp(timestep_embedding(t, self.channels))
        if self.d_mlp is not None:
            if d is None:
                raise ValueError("this UNet was built with step_cond=True: pass the step size d")
            emb = emb + self.d_mlp(timestep_embedding(d, self.channels))
        if (self.class_emb is None) != (y is None):
            raise ValueError("this UNet is class-conditional (num_classes > 0): pass the classes y" if y is None
                             else "y was given but this UNet has no classes (build it with num_classes > 0)")
        if y is not None:
            emb = emb + self.class_emb(y)
        emb = F.silu(emb)
        h, hs = self.conv_in(x), []
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb)
            hs.append(h)
            h = down(h)
        h = self.mid(h, emb)
        for blocks in self.up:
            skip = hs.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = torch.cat([h, skip], dim=1)
            for block in blocks:
                h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))

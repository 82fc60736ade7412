r"""DCGAN-style generator and discriminator, with SELF-MOD and spectral normalisation as options
("从DCGAN到SELF-MOD：GAN的模型架构发展一览").

.. math::
    G:\ z\sim\mathcal N(0,I) \mapsto \tanh(\mathrm{conv}(\cdots\mathrm{ReLU}(\mathrm{BN}(\mathrm{deconv}(W z)))\cdots)),
    \qquad D:\ x \mapsto w^\top \mathrm{LReLU}(\mathrm{conv}_{s=2}(\cdots x \cdots))

The post's line of architectures: DCGAN (strided transposed convolutions + BN + ReLU in G, strided
convolutions + LeakyReLU in D, no pooling) → a Lipschitz-constrained D (spectral normalisation,
:mod:`kexue.generative.spectral_norm`) → SELF-MOD (every BN in G modulated by z,
:mod:`kexue.generative.selfmod`). Sizes: any power of two >= 8 (the real 8×8 digits, or an image
folder resized). :class:`GAN` holds both networks so one optimizer (two parameter groups) and
:func:`kexue.train.fit` train them; see :mod:`kexue.generative.gan_losses` for the objectives and
:class:`GeneratorEMA` for the generator's weight average.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from kexue.generative.selfmod import SelfModBatchNorm
from kexue.generative.spectral_norm import spectral_norm
from kexue.optim.ema import EMA

D_NORMS = ("spectral", "batch", "none")


def _levels(size: int) -> int:
    """Number of ×2 resolution steps between 4×4 and ``size``."""
    k = int(round(math.log2(size))) if size > 0 else 0
    if size < 8 or 2 ** k != size:
        raise ValueError(f"GAN image size must be a power of two >= 8, got {size}")
    return k - 2


class Generator(nn.Module):
    """z -> Linear -> (C, 4, 4) -> [ConvT(4, stride 2) -> BN -> ReLU] x levels -> conv3x3 -> tanh.
    ``selfmod=True`` replaces every BN by :class:`SelfModBatchNorm` conditioned on z."""

    def __init__(self, z_dim: int = 32, size: int = 8, channels: int = 1, width: int = 64, selfmod: bool = False):
        super().__init__()
        levels = _levels(size)
        self.z_dim, self.size, self.channels, self.selfmod = z_dim, size, channels, selfmod
        widths = [width * 2 ** (levels - i) for i in range(levels + 1)]  # halves at every up-step
        self.project = nn.Linear(z_dim, widths[0] * 16)
        self.norms = nn.ModuleList(self._norm(c, z_dim) for c in widths)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.out = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def _norm(self, c: int, z_dim: int) -> nn.Module:
        return SelfModBatchNorm(c, z_dim) if self.selfmod else nn.BatchNorm2d(c)

    def _bn_relu(self, i: int, h: Tensor, z: Tensor) -> Tensor:
        h = self.norms[i](h, z) if self.selfmod else self.norms[i](h)
        return torch.relu(h)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"generator expects z of shape (N, {self.z_dim}), got {tuple(z.shape)}")
        h = self._bn_relu(0, self.project(z).view(len(z), -1, 4, 4), z)
        for i, up in enumerate(self.ups, start=1):
            h = self._bn_relu(i, up(h), z)
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    """conv3x3 -> LReLU -> [conv(4, stride 2) -> norm -> LReLU] x levels -> Linear -> one logit/critic value.
    ``norm``: ``"spectral"`` (every layer, SN-GAN), ``"batch"`` (DCGAN; not with gradient penalties,
    whose per-sample input gradients BN would mix), ``"none"``."""

    def __init__(self, size: int = 8, channels: int = 1, width: int = 64, norm: str = "spectral"):
        super().__init__()
        if norm not in D_NORMS:
            raise ValueError(f"discriminator norm must be one of {D_NORMS}, got {norm!r}")
        levels = _levels(size)
        self.norm = norm
        widths = [width * 2 ** i for i in range(levels + 1)]
        self.inp = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.bns = nn.ModuleList(nn.BatchNorm2d(b) if norm == "batch" else nn.Identity() for b in widths[1:])
        self.head = nn.Linear(widths[-1] * (size // 2 ** levels) ** 2, 1)
        if norm == "spectral":
            for m in [self.inp, *self.downs, self.head]:
                spectral_norm(m)

    def forward(self, x: Tensor) -> Tensor:
        h = nn.functional.leaky_relu(self.inp(x), 0.2)
        for down, bn in zip(self.downs, self.bns):
            h = nn.functional.leaky_relu(bn(down(h)), 0.2)
        return self.head(h.flatten(1)).squeeze(1)


class GAN(nn.Module):
    """Generator + discriminator in one module (one state dict, one ``fit``); ``step`` counts
    training calls of the objective so ``n_critic`` schedules survive a resume."""

    def __init__(self, generator: Generator, discriminator: Discriminator):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, z: Tensor | None = None) -> Tensor:
        """n images in [-1, 1] from the generator in eval mode (BN running statistics)."""
        was = self.generator.training
        self.generator.eval()
        if z is None:
            z = torch.randn(n, self.z_dim, generator=generator)
        out = self.generator(z.to(next(self.generator.parameters()).device))
        self.generator.train(was)
        return out


def build_gan(size: int = 8, channels: int = 1, z_dim: int = 32, width: int = 64, selfmod: bool = False,
              d_norm: str = "spectral") -> GAN:
    return GAN(Generator(z_dim, size, channels, width, selfmod), Discriminator(size, channels, width, d_norm))


class GeneratorEMA(EMA):
    r"""Weight EMA of the generator only, :math:`\bar\theta_t = \mu\bar\theta_{t-1} + (1-\mu)\theta_t`
    (parameters and BN running statistics). Give it to ``fit(..., ema=...)`` with the :class:`GAN`:
    it reads and swaps ``gan.generator``'s tensors and leaves the discriminator alone."""

    def __init__(self, gan: nn.Module, decay: float = 0.999, buffers: bool = True, warmup: bool = False):
        super().__init__(gan, decay, buffers)
        self.target_decay, self.warmup = decay, warmup

    def update(self, model: nn.Module) -> None:
        """``warmup=True``: decay_n = min(decay, (1 + n) / (10 + n)) for the n-th update, so a short run's
        average is not dominated by the initial weights."""
        if self.warmup:
            n = self.num_updates
            self.decay = min(self.target_decay, (1 + n) / (10 + n))
        super().update(model)

    def _tensors(self, model: nn.Module):
        model = getattr(model, "module", model)
        return super()._tensors(getattr(model, "generator", model))

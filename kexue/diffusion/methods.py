"""Method registry: which network each method trains and how it is sampled with a given NFE budget.

Trained model kinds: eps (DDPM/DDIM share it), flow (Euler/Heun), reflow (flow fine-tuned on its own ODE
pairs), shortcut, pfgm, udm.  ``generate(name, model, n, shape, nfe)`` returns images in [-1, 1] or None when
the sampler cannot use exactly that many function evaluations (e.g. Heun with NFE = 1).
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from kexue.diffusion.ddim import sample_ddim
from kexue.diffusion.ddpm import ddpm_loss, sample_ddpm
from kexue.diffusion.flow import flow_loss, reflow_pairs, sample_euler, sample_heun
from kexue.diffusion.pfgm import PoissonFieldNet, pfgm_loss, prior, sample_pfgm
from kexue.diffusion.schedules import alphas_cumprod, make_betas, spaced_timesteps
from kexue.diffusion.shortcut import sample_shortcut, shortcut_loss
from kexue.diffusion.train import train
from kexue.diffusion.udm import BlurNoise, sample_udm, udm_loss
from kexue.diffusion.unet import UNet

T = 1000
PFGM = dict(z_max=20.0, z_min=1e-3)
PFGM_TRAIN = dict(M=270, sigma_end=0.01, tau=0.03, gamma=5.0)


class EpsNet(nn.Module):
    """ε_θ(x, t) for integer DDPM steps t: the UNet sees t / T ∈ [0, 1)."""

    def __init__(self, net: nn.Module, schedule: str = "linear"):
        super().__init__()
        self.net = net
        self.register_buffer("abar", alphas_cumprod(make_betas(schedule, T)), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t.float() / T)


def build(kind: str, channels: int = 1, width: int = 32) -> nn.Module:
    if kind == "eps":
        return EpsNet(UNet(channels, width))
    if kind in ("flow", "reflow", "udm"):
        return UNet(channels, width)
    if kind == "shortcut":
        return UNet(channels, width, step_cond=True)
    if kind == "pfgm":
        return PoissonFieldNet(UNet(channels, width, out_channels=channels + 1), **PFGM)
    raise ValueError(f"unknown model kind {kind!r}")


def fit(kind: str, data: torch.Tensor, steps: int, width: int = 32, batch_size: int = 128,
        base: nn.Module | None = None, reflow_pairs_n: int = 2000, progress: bool = True, **fit_options) -> nn.Module:
    """Train a model of ``kind`` on ``data``; ``reflow`` starts from (and pairs with) the trained flow ``base``.
    ``fit_options`` go to :func:`kexue.train.fit` (``checkpoint_dir``, ``resume``, ``overwrite`` ...)."""
    model = build(kind, data.shape[1], width)
    if kind == "eps":
        loss = partial(_eps_loss)
    elif kind == "flow":
        loss = flow_loss
    elif kind == "reflow":
        if base is None:
            raise ValueError("reflow needs the trained flow model as base")
        model.load_state_dict(base.state_dict())
        noise = torch.randn(reflow_pairs_n, *data.shape[1:])
        z, x1 = reflow_pairs(base, noise, steps=20, progress=progress)
        data = torch.cat([z, x1], dim=1)  # train on fixed (noise, ODE(noise)) couplings
        c = z.shape[1]
        loss = lambda m, b: flow_loss(m, b[:, c:], b[:, :c])  # noqa: E731
    elif kind == "shortcut":
        loss = shortcut_loss
    elif kind == "pfgm":
        ref = data
        loss = lambda m, b: pfgm_loss(m, b, ref[torch.randint(0, len(ref), (1024,))], **PFGM_TRAIN,  # noqa: E731
                                      z_min=PFGM["z_min"])
    elif kind == "udm":
        process = BlurNoise(sigma_max=data.shape[-1] / 2)
        loss = lambda m, b: udm_loss(m, b, process)  # noqa: E731
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return train(model, loss, data, steps, batch_size=batch_size, progress=progress, **fit_options)


def _eps_loss(model: EpsNet, x0: torch.Tensor) -> torch.Tensor:
    return ddpm_loss(model, x0, model.abar)


# sampler name -> model kind it needs
SAMPLERS = {"ddpm": "eps", "ddim": "eps", "flow-euler": "flow", "flow-heun": "flow", "reflow-euler": "reflow",
            "shortcut": "shortcut", "pfgm": "pfgm", "udm-blur": "udm"}


@torch.no_grad()
def generate(name: str, model: nn.Module, n: int, shape: tuple[int, ...], nfe: int, seed: int = 0,
             progress: bool = False) -> torch.Tensor | None:
    """n samples of ``shape`` (C, H, W) from sampler ``name`` using exactly ``nfe`` network calls."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    if name in ("ddpm", "ddim"):
        ts = spaced_timesteps(T, nfe, "trailing")  # trailing: the first step starts from pure noise
        fn = sample_ddpm if name == "ddpm" else sample_ddim
        return fn(model, x, model.abar, ts, generator=g, progress=progress)
    if name in ("flow-euler", "reflow-euler"):
        return sample_euler(model, x, nfe, progress)
    if name == "flow-heun":
        return sample_heun(model, x, nfe // 2, progress) if nfe % 2 == 0 else None
    if name == "shortcut":
        return sample_shortcut(model, x, nfe, progress)
    if name == "pfgm":
        torch.manual_seed(seed)
        x0 = prior(n, math.prod(shape), PFGM["z_max"]).view(n, *shape)
        return sample_pfgm(model, x0, nfe, **PFGM, progress=progress)
    if name == "udm-blur":
        return sample_udm(model, x, nfe, BlurNoise(sigma_max=shape[-1] / 2), progress=progress)
    raise ValueError(f"unknown sampler {name!r}; choose from {sorted(SAMPLERS)}")

"""ODE / rectified flow: x_t = (1-t) x_0 + t x_1 (x_0 noise, x_1 data), train v_θ(x_t, t) ≈ x_1 - x_0.

生成扩散模型漫谈（十七）：构建ODE的一般步骤（下） / 硬刚扩散ODE, and the ReFlow post ("从Wasserstein距离到
ReFlow").  Minimising E||v_θ(x_t, t) - (x_1 - x_0)||² gives v_θ = E[x_1 - x_0 | x_t], whose ODE dx/dt = v_θ
carries noise to data.  ReFlow re-pairs (x_0, ODE(x_0)) and trains again: paths of a deterministic coupling
do not cross, so the new flow is straighter and needs fewer steps.
Models are called as ``model(x, t)`` with float t ∈ [0, 1] of shape (B,).

The loss and the samplers are pure functions of a velocity model and live in :mod:`kexue.losses.flow_matching`
(the multimodal Transformer uses them too); they are re-exported here.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from kexue.losses.flow_matching import VelocityModel, _bcast, flow_loss, sample_euler, sample_heun  # noqa: F401


@torch.no_grad()
def reflow_pairs(model: VelocityModel, noise: torch.Tensor, steps: int = 50, batch_size: int = 500,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The coupling for ReFlow: (x_0, x_1 = ODE_θ(x_0)), integrated with Heun."""
    outs = [sample_heun(model, z, steps) for z in tqdm(noise.split(batch_size), disable=not progress,
                                                        desc="reflow pairs", leave=False)]
    return noise, torch.cat(outs)


__all__ = ["VelocityModel", "flow_loss", "reflow_pairs", "sample_euler", "sample_heun"]

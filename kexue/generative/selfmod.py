r"""Self-modulated batch normalisation (Chen et al. 2019, "On Self Modulation for GANs"; the last
step of "从DCGAN到SELF-MOD：GAN的模型架构发展一览").

.. math::
    h' = \gamma_\ell(z)\odot\frac{h-\mu_B}{\sqrt{\sigma_B^2+\epsilon}} + \beta_\ell(z),\qquad
    \gamma_\ell(z) = 1 + W^{\gamma}_2\,\mathrm{ReLU}(W^{\gamma}_1 z),\quad
    \beta_\ell(z) = W^{\beta}_2\,\mathrm{ReLU}(W^{\beta}_1 z)

Conditional BN whose condition is the generator's own latent: every layer's feature maps are rescaled
and shifted per sample as a function of z, with no labels needed. The output layers of the two MLPs
start at zero, so at initialisation the layer *is* plain BN (gamma = 1, beta = 0).
"""
from __future__ import annotations

from torch import Tensor, nn


class SelfModBatchNorm(nn.Module):
    """BatchNorm2d without affine parameters, modulated per sample by two small MLPs of ``z``."""

    def __init__(self, channels: int, z_dim: int, hidden: int = 32):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.beta = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        for mlp in (self.gamma, self.beta):
            nn.init.zeros_(mlp[-1].weight)
            nn.init.zeros_(mlp[-1].bias)

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        gamma = 1 + self.gamma(z)[:, :, None, None]
        beta = self.beta(z)[:, :, None, None]
        return gamma * self.bn(h) + beta

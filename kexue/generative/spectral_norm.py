r"""Spectral normalisation by power iteration (Miyato et al. 2018; used as the discriminator's
Lipschitz constraint in "从DCGAN到SELF-MOD：GAN的模型架构发展一览" and "深度学习中的Lipschitz约束").

.. math::
    u \leftarrow \frac{W v}{\|W v\|},\quad v \leftarrow \frac{W^\top u}{\|W^\top u\|},\quad
    \hat\sigma = u^\top W v,\qquad W_{\rm SN} = c\,\frac{W}{\hat\sigma}

``W`` is the weight flattened to ``(out, -1)`` (a conv kernel becomes a matrix with one row per output
channel). :math:`\hat\sigma \le \sigma_{\max}(W)` with equality once the iteration has converged, so
:math:`\|W_{\rm SN}\|_2 \to c`; one iteration per training step suffices because ``u`` persists
between steps and W changes slowly. ``u``/``v`` are buffers (saved, not trained); in eval mode they are
frozen, so inference is deterministic.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize


class SpectralNorm(nn.Module):
    """Parametrization ``W -> c W / sigma_hat`` with persistent power-iteration vectors."""

    def __init__(self, weight: Tensor, coefficient: float = 1.0, n_power_iterations: int = 1, eps: float = 1e-12):
        super().__init__()
        if coefficient <= 0:
            raise ValueError(f"spectral norm coefficient must be > 0, got {coefficient}")
        if n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be >= 1, got {n_power_iterations}")
        self.coefficient, self.n_power_iterations, self.eps = float(coefficient), n_power_iterations, eps
        rows, cols = weight.shape[0], weight[0].numel()
        self.register_buffer("u", F.normalize(weight.new_empty(rows).normal_(), dim=0, eps=eps))
        self.register_buffer("v", F.normalize(weight.new_empty(cols).normal_(), dim=0, eps=eps))

    @torch.no_grad()
    def power_iteration(self, mat: Tensor, n: int) -> None:
        """Run ``n`` iterations in place on the ``u``/``v`` buffers (no gradient flows through them)."""
        for _ in range(n):
            self.u.copy_(F.normalize(mat @ self.v, dim=0, eps=self.eps))
            self.v.copy_(F.normalize(mat.t() @ self.u, dim=0, eps=self.eps))

    def forward(self, weight: Tensor) -> Tensor:
        mat = weight.flatten(1)
        if self.training:
            self.power_iteration(mat.detach(), self.n_power_iterations)
        # clone: u, v are updated in place by the next iteration but used by this step's backward
        u, v = self.u.clone(), self.v.clone()
        sigma = torch.dot(u, mat @ v)
        return weight * (self.coefficient / sigma)


def spectral_norm(module: nn.Module, name: str = "weight", coefficient: float = 1.0,
                  n_power_iterations: int = 1) -> nn.Module:
    """Register :class:`SpectralNorm` on ``module.<name>`` (Linear, Conv*, ConvTranspose*: their
    ``weight`` is flattened from dim 0). Returns the module."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        raise ValueError(f"spectral_norm: {type(module).__name__}.{name} is not a weight matrix/kernel")
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        raise ValueError("spectral_norm: ConvTranspose weights are (in, out, ...); not supported")
    parametrize.register_parametrization(module, name, SpectralNorm(weight.detach(), coefficient,
                                                                      n_power_iterations))
    return module


def sn_sigma(module: nn.Module, name: str = "weight") -> SpectralNorm:
    """The :class:`SpectralNorm` parametrization registered on ``module.<name>``."""
    try:
        return getattr(module.parametrizations, name)[0]
    except AttributeError:
        raise ValueError(f"{type(module).__name__}.{name} has no spectral norm") from None

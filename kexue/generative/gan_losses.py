r"""GAN objectives, written as one loss for simultaneous updates of both players.

.. math::
    \text{original: } L_D = \mathbb E\,\mathrm{softplus}(-D(x)) + \mathbb E\,\mathrm{softplus}(D(G(z))),\quad
        L_G = \mathbb E\,\mathrm{softplus}(-D(G(z)))\ \text{(non-saturating)} \\
    \text{hinge: } L_D = \mathbb E\,\mathrm{relu}(1 - D(x)) + \mathbb E\,\mathrm{relu}(1 + D(G(z))),\quad L_G = -\mathbb E\,D(G(z)) \\
    \text{WGAN-GP: } L_D = \mathbb E\,D(G(z)) - \mathbb E\,D(x) + \lambda\,\mathbb E\,(\|\nabla_{\hat x} D(\hat x)\| - 1)^2,\quad
        \hat x = \epsilon x + (1-\epsilon) G(z)

**reflow** — "生成扩散模型漫谈（二十）：从ReFlow到WGAN-GP": take the generator's samples as ReFlow's
start :math:`x_0 = G(z)`, the data as its end :math:`x_1`, the straight path
:math:`x_t = (1-t)x_0 + t x_1`, and restrict the velocity field to a gradient field
:math:`v = \nabla D`. ReFlow's regression :math:`\mathbb E\|\nabla D(x_t) - (x_1 - x_0)\|^2` then expands,
with :math:`\int_0^1\langle\nabla D(x_t), x_1 - x_0\rangle dt = D(x_1) - D(x_0)`, into

.. math::
    L_D = \mathbb E\,D(x_0) - \mathbb E\,D(x_1) + \tfrac12\,\mathbb E_{t}\|\nabla D(x_t)\|^2

— WGAN-GP with a zero-centred squared penalty at random interpolates. The generator then moves its
samples a small step along the field: :math:`L_G = \tfrac12\,\mathbb E\|G(z) - \mathrm{sg}[G(z) + \eta\nabla D(G(z))]\|^2`,
whose gradient is :math:`-\eta\,\mathbb E\,J_G^\top\nabla D`, i.e. WGAN's generator loss scaled by η.

**dynamics** — "从动力学角度看优化算法（四）：GAN的第三个阶段": train both players by one simultaneous
gradient flow :math:`\dot\varphi = -\nabla_\varphi L_D,\ \dot\theta = -\nabla_\theta L_G` and ask whether
the equilibrium is *stable*. Near it the Jacobian of this flow has (nearly) purely imaginary
eigenvalues — the players rotate around the equilibrium instead of converging (the Dirac-GAN example,
:func:`dirac_gan_jacobian`). Adding :math:`\lambda\|\nabla_\varphi L_D\|^2` to the generator's loss
(the discriminator's gradient norm, differentiated through G) adds a negative real part, making
the equilibrium locally asymptotically stable (Nagarajan & Kolter 2017). Option ``dynamics_weight``.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LOSSES = ("original", "hinge", "wgan-gp", "reflow")


def d_loss(kind: str, d_real: Tensor, d_fake: Tensor) -> Tensor:
    """The discriminator's adversarial term (penalties are separate)."""
    if kind == "original":
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if kind == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    if kind in ("wgan-gp", "reflow"):
        return d_fake.mean() - d_real.mean()
    raise ValueError(f"unknown GAN loss {kind!r}; choose from {LOSSES}")


def g_loss(kind: str, d_fake: Tensor) -> Tensor:
    if kind == "original":
        return F.softplus(-d_fake).mean()
    if kind in ("hinge", "wgan-gp", "reflow"):
        return -d_fake.mean()
    raise ValueError(f"unknown GAN loss {kind!r}; choose from {LOSSES}")


def interpolate(real: Tensor, fake: Tensor, t: Tensor | None = None) -> Tensor:
    """x_t = t real + (1 - t) fake with one t ~ U(0, 1) per sample (unless given)."""
    if t is None:
        t = torch.rand(len(real), device=real.device, dtype=real.dtype)
    return t.view(-1, *([1] * (real.dim() - 1))) * real + (1 - t.view(-1, *([1] * (real.dim() - 1)))) * fake


def gradient_penalty(discriminator: nn.Module, x: Tensor, center: float = 1.0) -> Tensor:
    r""":math:`\mathbb E(\|\nabla_x D(x)\| - c)^2` at the given points, differentiable (create_graph) so
    the penalty trains D. ``center=1`` is WGAN-GP; ``center=0`` the squared norm of the reflow loss."""
    x = x.detach().requires_grad_(True)
    grad, = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - center).pow(2).mean()


def reflow_generator_loss(discriminator: nn.Module, fake: Tensor, step: float) -> Tensor:
    r""":math:`\tfrac12\mathbb E\|G(z) - \mathrm{sg}[G(z) + \eta\nabla D(G(z))]\|^2` (sum over pixels)."""
    x = fake.detach().requires_grad_(True)
    grad, = torch.autograd.grad(discriminator(x).sum(), x)
    target = (fake + step * grad).detach()
    return 0.5 * (fake - target).pow(2).flatten(1).sum(1).mean()


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Forward passes inside build no graph edges to ``module``'s parameters (the generator's terms
    must not train the discriminator); requires_grad is restored afterwards."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def discriminator_grad_norm2(discriminator: nn.Module, kind: str, real: Tensor, fake: Tensor) -> Tensor:
    r""":math:`\|\nabla_\varphi L_D(\varphi, G_\theta(z))\|^2`, kept differentiable (``create_graph``) so
    its gradient reaches the generator through ``fake``; :class:`GANObjective` evaluates it on a
    parameter-detached copy of D so it trains the generator only."""
    params = [p for p in discriminator.parameters() if p.requires_grad]
    loss = d_loss(kind, discriminator(real), discriminator(fake))
    grads = torch.autograd.grad(loss, params, create_graph=True)
    return sum(g.pow(2).sum() for g in grads)


class GANObjective:
    """``loss_fn(gan, batch)`` for :func:`kexue.train.fit`: one scalar whose gradient is ∇L_D for the
    discriminator and ∇L_G for the generator (simultaneous updates; the generator's term is added on
    every ``n_critic``-th call only). ``last`` holds the latest terms as floats."""

    def __init__(self, loss: str = "hinge", gp_weight: float = 10.0, n_critic: int = 1, reflow_step: float = 1.0,
                 dynamics_weight: float = 0.0):
        if loss not in LOSSES:
            raise ValueError(f"unknown GAN loss {loss!r}; choose from {LOSSES}")
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        if loss != "wgan-gp" and gp_weight != 10.0:
            raise ValueError(f"gp_weight is used by loss='wgan-gp' only (reflow's penalty weight is fixed at 1/2)")
        self.loss, self.gp_weight, self.n_critic = loss, gp_weight, n_critic
        self.reflow_step, self.dynamics_weight = reflow_step, dynamics_weight
        self.last: dict[str, float] = {}

    def __call__(self, gan: nn.Module, batch) -> Tensor:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        gen, disc = gan.generator, gan.discriminator
        if self.loss in ("wgan-gp", "reflow") and getattr(disc, "norm", None) == "batch":
            raise ValueError(f"loss={self.loss!r} penalises per-sample input gradients: use d_norm 'spectral' or 'none'")
        z = torch.randn(len(real), gen.z_dim, device=real.device, dtype=real.dtype)
        fake = gen(z)
        ld = d_loss(self.loss, disc(real), disc(fake.detach()))
        terms = {"d_adv": ld.item()}
        if self.loss == "wgan-gp":
            gp = gradient_penalty(disc, interpolate(real, fake.detach()), center=1.0)
            ld = ld + self.gp_weight * gp
            terms["gp"] = gp.item()
        elif self.loss == "reflow":
            # x_t = (1 - t) x0 + t x1 with x0 = G(z), x1 = data: the same interpolate, t on the real side
            gp = gradient_penalty(disc, interpolate(real, fake.detach()), center=0.0)
            ld = ld + 0.5 * gp
            terms["grad2"] = gp.item()
        total = ld
        train_g = int(gan.step) % self.n_critic == 0
        if gan.training:
            gan.step += 1
        if train_g:
            with frozen(disc):
                lg = (reflow_generator_loss(disc, fake, self.reflow_step) if self.loss == "reflow"
                      else g_loss(self.loss, disc(fake)))
            terms["g"] = lg.item()
            if self.dynamics_weight:
                lg = lg + self.dynamics_weight * _generator_only(disc, discriminator_grad_norm2, self.loss, real, fake)
                terms["dyn"] = (lg.item() - terms["g"]) / self.dynamics_weight
            total = total + lg
        self.last = terms
        return total


def _generator_only(disc: nn.Module, fn, *args) -> Tensor:
    """Evaluate ``fn(disc_copy, ...)`` on a parameter-detached copy of ``disc`` so the returned value
    has a gradient w.r.t. the generator (through ``fake``) but none w.r.t. the real discriminator."""
    from torch.func import functional_call

    params = {k: v.detach().requires_grad_(True) for k, v in disc.named_parameters()}

    class _Bound(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = [disc]  # a list: not registered, so parameters() is only the copies below
            self.copies = list(params.values())

        def parameters(self, recurse: bool = True):
            return iter(self.copies)

        def forward(self, x):
            return functional_call(self.inner[0], params, (x,))

    return fn(_Bound(), *args)

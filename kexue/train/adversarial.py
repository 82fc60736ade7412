r"""Adversarial training on the token-embedding table — 《对抗训练浅谈：意义、方法和思考（附Keras实现）》 and
《泛化性乱弹：从随机噪声、梯度惩罚到虚拟对抗训练》. One option of :func:`kexue.train.fit`:
``fit(..., adversarial=FGM(epsilon=1.0))``; each object runs a micro-batch's forward and backward passes.

Text is discrete, so the perturbation goes on the embeddings: as in the posts' Keras code, onto the token
table :math:`W` itself (every occurrence of a token moves together; a tied output layer moves too), with
:math:`g = \nabla_W L` the (dense) gradient of the loss with respect to the table:

* :class:`FGM` (Fast Gradient Method): :math:`\Delta = \epsilon\,g/\|g\|`; the model then descends
  :math:`L(W+\Delta)` — only that, as the post's code does (``include_clean=True``: :math:`L(W) + L(W+\Delta)`,
  the common PyTorch practice).
* :class:`PGD` (Madry et al.): K small steps, each projected back onto the ball :math:`\|r\| \le \epsilon`:
  :math:`r_{t+1} = \Pi_{\|r\|\le\epsilon}\big(r_t + \alpha\,g(W + r_t)/\|g(W + r_t)\|\big)`, then descend
  :math:`L(W + r_K)`.
* :class:`VAT` (virtual adversarial training, label-free): the direction that most changes the model's
  own prediction, :math:`\max_{\|\Delta\|\le\epsilon} \mathrm{KL}(p(W)\,\|\,p(W+\Delta))`, found by power
  iteration from a random :math:`d`: repeat :math:`d \leftarrow \nabla_\Delta \mathrm{KL}(p\,\|\,p(W+\Delta))|_{\Delta=\xi d/\|d\|}`,
  then :math:`\Delta = \epsilon\,d/\|d\|`; the loss is :math:`L + w\,\mathrm{KL}(\mathrm{sg}[p(W)]\,\|\,p(W+\Delta))`
  (the post's defaults :math:`\epsilon = 1, \xi = 10`, one iteration).
* :class:`GradientPenalty`: to first order FGM's :math:`\nabla_\theta L(x + \epsilon\nabla_x L)` is
  :math:`\nabla_\theta\big[L + \tfrac12\epsilon\|\nabla_x L\|^2\big]`, so train that instead:
  :math:`x` are the looked-up embedding vectors (every occurrence), and the penalty is differentiated
  through (double backward; attention then runs on PyTorch's composite "math" kernel, the fused ones
  having no second derivative).

Every norm is over the whole table, plus 1e-8 (the posts' ``l2_normalize``). The table is restored
**bit-exactly** after each step from a copy taken before the first perturbation — not by subtracting the
perturbation again, which leaves rounding errors in the weights. Probe passes run under DDP's
``no_sync`` and use ``torch.autograd.grad`` (no parameter gradient is touched); each rank perturbs with its
own gradient. The model stays in the mode ``fit`` set (train: dropout on) for every pass.

``embedding``: the ``nn.Embedding`` to perturb — the module, its name (``"embeddings.token"``, the
``.weight`` suffix allowed), or None: the one ``nn.Embedding`` named ``token`` or ``shared`` (kexue's
families' token tables).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

TOKEN_TABLES = ("token", "shared")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _no_sync(model: nn.Module):
    return model.no_sync() if isinstance(model, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()


def _loss_of(out) -> Tensor:
    return out["loss"] if isinstance(out, dict) else out


def find_embedding(model: nn.Module, embedding: str | nn.Module | None = None) -> tuple[str, nn.Embedding]:
    """(name, module) of the token-embedding table to perturb (see the module doc for ``embedding``)."""
    raw = _unwrap(model)
    tables = {n: m for n, m in raw.named_modules() if isinstance(m, nn.Embedding)}
    if isinstance(embedding, nn.Module):
        found = [n for n, m in tables.items() if m is embedding]
        if not found:
            raise ValueError(f"adversarial: the given embedding is not an nn.Embedding of the model "
                             f"(its tables: {sorted(tables) or 'none'})")
        return found[0], embedding
    if isinstance(embedding, str):
        name = embedding.removesuffix(".weight")
        if name not in tables:
            raise ValueError(f"adversarial: embedding={embedding!r} is not an nn.Embedding of the model "
                             f"(its tables: {sorted(tables) or 'none'})")
        return name, tables[name]
    if embedding is not None:
        raise ValueError(f"adversarial: embedding must be a name, an nn.Embedding or None, got {type(embedding).__name__}")
    named = [n for n in tables if n.rsplit(".", 1)[-1] in TOKEN_TABLES]
    if len(named) != 1:
        raise ValueError(f"adversarial: cannot tell the token table among the model's nn.Embedding modules "
                         f"{sorted(tables) or '(none)'}; pass embedding='<name>'")
    return named[0], tables[named[0]]


def _wide(x: Tensor) -> Tensor:
    """``x`` in at least fp32."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def l2_normalize(x: Tensor) -> Tensor:
    """x / (‖x‖ + 1e-8), the norm over the whole tensor (in at least fp32)."""
    y = _wide(x)
    return y / (torch.linalg.vector_norm(y) + 1e-8)


def _dense(g: Tensor | None, weight: Tensor) -> Tensor:
    if g is None:
        return torch.zeros_like(weight)
    return g.coalesce().to_dense() if g.is_sparse else g


class _Table:
    """The table's weight, perturbed to W0 + delta and restored from an exact copy of W0."""

    def __init__(self, module: nn.Embedding):
        self.weight = module.weight
        self.original = self.weight.detach().clone()
        self.trainable = self.weight.requires_grad

    @torch.no_grad()
    def set(self, delta: Tensor | None) -> None:
        self.weight.copy_(self.original if delta is None else self.original + delta.to(self.original.dtype))

    @torch.no_grad()
    def restore(self) -> None:
        self.weight.copy_(self.original)
        self.weight.requires_grad_(self.trainable)

    @contextlib.contextmanager
    def probing(self):
        """Gradients with respect to the table even when it is frozen (only during probe passes)."""
        self.weight.requires_grad_(True)
        try:
            yield
        finally:
            self.weight.requires_grad_(self.trainable)


class Adversarial:
    """Base: ``step(model, loss_fn, batch, autocast=, scale=)`` runs the micro-batch's passes, calls
    ``backward`` on ``scale`` × its loss and returns ``loss_fn``'s output with the trained loss under
    ``"loss"`` (plus its parts); ``settings()`` describes it for the run folder."""

    def __init__(self, embedding: str | nn.Module | None = None):
        self.embedding = embedding

    def settings(self) -> dict[str, Any]:
        out = {"class": type(self).__name__}
        out.update({k: v for k, v in vars(self).items() if isinstance(v, (bool, int, float, str)) or v is None})
        if isinstance(self.embedding, nn.Module):
            out["embedding"] = type(self.embedding).__name__
        return out

    def _probe(self, model, loss_fn, batch, table: _Table, autocast, fn: Callable | None = None) -> tuple[Tensor, Tensor]:
        """(∇_W of the loss — or of ``fn(model, batch)`` — at the table's current value, that value)."""
        with _no_sync(model), table.probing():
            with autocast:
                value = (fn or (lambda m, b: _loss_of(loss_fn(m, b))))(model, batch)
            (g,) = torch.autograd.grad(value, table.weight, allow_unused=True)
        return _dense(g, table.weight), value.detach()

    def step(self, model, loss_fn, batch, *, autocast=contextlib.nullcontext(), scale: float = 1.0):
        raise NotImplementedError


def _with(out, loss: Tensor, **parts: Tensor):
    if isinstance(out, dict):
        return {**out, "loss": loss, **parts}
    return {"loss": loss, **parts}


class _GradientAttack(Adversarial):
    """FGM and PGD: a perturbation from loss gradients, then the descent at the perturbed table."""

    include_clean: bool

    def _clean_pass(self, model, loss_fn, batch, table: _Table, autocast, scale: float) -> tuple[Tensor, Tensor]:
        """The clean loss trains the model too (``include_clean``): one backward gives both its parameter
        gradients and, through a hook on the table, ∇_W L."""
        seen: list[Tensor] = []
        with _no_sync(model), table.probing():
            handle = table.weight.register_hook(lambda g: seen.append(g))
            try:
                with autocast:
                    value = _loss_of(loss_fn(model, batch))
                (value * scale).backward()
            finally:
                handle.remove()
        if not table.trainable:
            table.weight.grad = None
        g = sum(_dense(s, table.weight) for s in seen) / scale if seen else torch.zeros_like(table.weight)
        return g, value.detach()

    def perturbation(self, model, loss_fn, batch, *, autocast=contextlib.nullcontext()) -> Tensor:
        """The perturbation of the table this step would use (the table is left as it was)."""
        table = _Table(find_embedding(model, self.embedding)[1])
        try:
            return self._attack(model, loss_fn, batch, table, autocast, None)[0]
        finally:
            table.restore()

    def step(self, model, loss_fn, batch, *, autocast=contextlib.nullcontext(), scale: float = 1.0):
        table = _Table(find_embedding(model, self.embedding)[1])
        try:
            delta, clean = self._attack(model, loss_fn, batch, table, autocast, scale if self.include_clean else None)
            table.set(delta)
            with autocast:
                out = loss_fn(model, batch)
            adv = _loss_of(out)
            (adv * scale).backward()
        finally:
            table.restore()
        total = adv.detach() + clean if self.include_clean else adv.detach()
        return _with(out, total, clean_loss=clean, adversarial_loss=adv.detach())

    def _attack(self, model, loss_fn, batch, table, autocast, clean_scale) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class FGM(_GradientAttack):
    """Δ = ε·g/‖g‖ on the token table (module doc); ``include_clean``: also descend the clean loss."""

    def __init__(self, epsilon: float = 1.0, include_clean: bool = False, embedding: str | nn.Module | None = None):
        super().__init__(embedding)
        if not epsilon > 0:
            raise ValueError(f"FGM: epsilon must be > 0, got {epsilon}")
        self.epsilon, self.include_clean = float(epsilon), bool(include_clean)

    def _attack(self, model, loss_fn, batch, table, autocast, clean_scale):
        if clean_scale is not None:
            g, clean = self._clean_pass(model, loss_fn, batch, table, autocast, clean_scale)
        else:
            g, clean = self._probe(model, loss_fn, batch, table, autocast)
        return self.epsilon * l2_normalize(g), clean


class PGD(_GradientAttack):
    """``steps`` normalised gradient steps of size ``alpha``, each projected onto ‖r‖ ≤ ε (module doc)."""

    def __init__(self, epsilon: float = 1.0, alpha: float = 0.3, steps: int = 3, include_clean: bool = False,
                 embedding: str | nn.Module | None = None):
        super().__init__(embedding)
        if not (epsilon > 0 and alpha > 0):
            raise ValueError(f"PGD: epsilon and alpha must be > 0, got {epsilon}, {alpha}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"PGD: steps must be a positive integer, got {steps!r}")
        self.epsilon, self.alpha, self.steps, self.include_clean = float(epsilon), float(alpha), steps, bool(include_clean)

    def _attack(self, model, loss_fn, batch, table, autocast, clean_scale):
        r, clean = None, None
        for t in range(self.steps):
            table.set(r)
            if t == 0 and clean_scale is not None:
                g, clean = self._clean_pass(model, loss_fn, batch, table, autocast, clean_scale)
            else:
                g, value = self._probe(model, loss_fn, batch, table, autocast)
                clean = value if t == 0 else clean
            r = self.alpha * l2_normalize(g) if r is None else r + self.alpha * l2_normalize(g)
            norm = torch.linalg.vector_norm(r)
            r = torch.where(norm > self.epsilon, self.epsilon * r / norm, r)  # back onto the ε-ball
        return r, clean


def kl_divergence(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """Mean over rows of KL(softmax(p) ‖ softmax(q)) along the last axis."""
    log_p, log_q = F.log_softmax(_wide(p_logits), -1), F.log_softmax(_wide(q_logits), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


class VAT(Adversarial):
    """Virtual adversarial training (module doc): ``output_fn(model, batch)`` gives the logits whose
    prediction must not change (labels are not needed); ``weight`` scales the KL term added to the loss."""

    def __init__(self, output_fn: Callable[[nn.Module, Any], Tensor], epsilon: float = 1.0, xi: float = 10.0,
                 iters: int = 1, weight: float = 1.0, embedding: str | nn.Module | None = None):
        super().__init__(embedding)
        if not callable(output_fn):
            raise ValueError("VAT: output_fn(model, batch) -> logits is required")
        if not (epsilon > 0 and xi > 0):
            raise ValueError(f"VAT: epsilon and xi must be > 0, got {epsilon}, {xi}")
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise ValueError(f"VAT: iters must be a positive integer, got {iters!r}")
        self.output_fn = output_fn
        self.epsilon, self.xi, self.iters, self.weight = float(epsilon), float(xi), iters, float(weight)

    def _target(self, model, batch, autocast) -> Tensor:
        with torch.no_grad(), autocast:
            return self.output_fn(model, batch).detach()

    def _power_iteration(self, model, batch, table: _Table, target: Tensor, autocast) -> Tensor:
        d = torch.randn_like(table.original)
        kl = lambda m, b: kl_divergence(target, self.output_fn(m, b))
        for _ in range(self.iters):
            table.set(self.xi * l2_normalize(d))
            d = self._probe(model, None, batch, table, autocast, fn=kl)[0]
        table.set(None)
        return self.epsilon * l2_normalize(d)

    def perturbation(self, model, batch, *, autocast=contextlib.nullcontext()) -> Tensor:
        """The perturbation of the table this step would use (draws the random start from torch's RNG)."""
        table = _Table(find_embedding(model, self.embedding)[1])
        try:
            return self._power_iteration(model, batch, table, self._target(model, batch, autocast), autocast)
        finally:
            table.restore()

    def step(self, model, loss_fn, batch, *, autocast=contextlib.nullcontext(), scale: float = 1.0):
        table = _Table(find_embedding(model, self.embedding)[1])
        try:
            target = self._target(model, batch, autocast)
            delta = self._power_iteration(model, batch, table, target, autocast)
            table.set(delta)
            with _no_sync(model):  # the last backward below, the supervised one, synchronises DDP
                with autocast:
                    vat = kl_divergence(target, self.output_fn(model, batch))
                (self.weight * vat * scale).backward()
        finally:
            table.restore()
        with autocast:
            out = loss_fn(model, batch)
        loss = _loss_of(out)
        (loss * scale).backward()
        return _with(out, loss.detach() + self.weight * vat.detach(), vat=vat.detach())


class GradientPenalty(Adversarial):
    """L + ½·ε·‖∂L/∂x‖², x the looked-up embedding vectors (module doc; the post's Keras code: ε = 1)."""

    def __init__(self, epsilon: float = 1.0, embedding: str | nn.Module | None = None):
        super().__init__(embedding)
        if not epsilon > 0:
            raise ValueError(f"GradientPenalty: epsilon must be > 0, got {epsilon}")
        self.epsilon = float(epsilon)

    def loss(self, model, loss_fn, batch, *, autocast=contextlib.nullcontext()):
        """(loss_fn's output, L + ½ε·gp, gp) with the graph kept for the backward."""
        name, module = find_embedding(model, self.embedding)
        looked_up: list[Tensor] = []

        def capture(_module, _inputs, output):
            if not output.requires_grad:  # a frozen table: its vectors are still inputs to penalise
                output = output.detach().requires_grad_()
            looked_up.append(output)
            return output

        handle = module.register_forward_hook(capture)
        try:  # the fused attention kernels have no second derivative: the composite (math) one has
            with autocast, sdpa_kernel(SDPBackend.MATH):
                out = loss_fn(model, batch)
        finally:
            handle.remove()
        if not looked_up:
            raise ValueError(f"GradientPenalty: the loss never looked up the table {name!r}")
        loss = _loss_of(out)
        grads = torch.autograd.grad(loss, looked_up, create_graph=True, allow_unused=True)
        gp = sum((_wide(g).pow(2).sum() for g in grads if g is not None), _wide(loss.new_zeros(())))
        return out, loss + 0.5 * self.epsilon * gp, gp

    def step(self, model, loss_fn, batch, *, autocast=contextlib.nullcontext(), scale: float = 1.0):
        out, total, gp = self.loss(model, loss_fn, batch, autocast=autocast)
        (total * scale).backward()
        return _with(out, total.detach(), gradient_penalty=gp.detach())

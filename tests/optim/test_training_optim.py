"""Optimizers against independent oracles: lion-pytorch, a numpy Amos oracle, torch's AdamW,
torch.optim.swa_utils.AveragedModel, and closed forms for the schedules."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from kexue.optim import EMA, Amos, AmosDecay, AmosSchedule, Lion, PiecewiseLinear, WarmupCosine, WarmupLinear, amos_hparams, param_groups_by_scale
from kexue.train.loop import fit


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def _data(n=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)) for _ in range(n)]


def _loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _train(model, opt, data):
    for b in data:
        opt.zero_grad()
        _loss(model, b).backward()
        opt.step()
    return model


def test_lion_matches_lion_pytorch():
    from lion_pytorch import Lion as RefLion
    a, b = _mlp(), _mlp()
    _train(a, Lion(a.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1), _data())
    _train(b, RefLion(b.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1), _data())
    for p, q in zip(a.parameters(), b.parameters()):
        assert (p - q).abs().max().item() <= 1e-6
    assert not torch.equal(a[0].weight, _mlp()[0].weight)


def test_adamw_through_fit_matches_torch_adamw():
    a, b = _mlp(), _mlp()
    data = _data()
    fit(a, _loss, data, optimizer=torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=0.05), progress=False)
    _train(b, torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.05), data)
    for p, q in zip(a.parameters(), b.parameters()):
        assert (p - q).abs().max().item() <= 1e-7


# ---- Amos: standalone numpy oracle of the published rule (jestimator.amos.scale_by_amos,
# followed by optional optax.ema(momentum, debias=False), preceded by optax.clip). jestimator
# itself needs jax/flax/optax, which are not installed here, so the rule is re-implemented.
def _amos_oracle(theta, grads, xi, eta, beta=0.999, reduced=(), momentum=None, clip=None,
                 extra_l2=0.0, d_coef=0.25, c_coef=0.25, eps=2.0 ** -125):
    theta = theta.copy()
    vshape = [1 if i in reduced else s for i, s in enumerate(theta.shape)]
    v, b, m = np.zeros(vshape), np.zeros(vshape), np.zeros_like(theta)
    for count, gfn in enumerate(grads, start=1):
        g = gfn(theta)
        if clip:
            g = np.clip(g, -clip, clip)
        g2 = np.mean(g * g, axis=tuple(reduced), keepdims=True) if reduced else g * g
        v = v * beta + g2 * (1 - beta)
        r = (1 - beta ** count) / np.maximum(v, eps)
        gamma = 1 / np.sqrt(1 + c_coef * np.sqrt(xi) * b) * xi ** 2 * r * g2
        init_lr = xi * eta
        d = 1 / (1 + d_coef * np.sqrt(init_lr) * b)
        u = d * ((-0.5 * gamma - extra_l2) * theta - init_lr * np.sqrt(r) * g)
        b = b + gamma * (1 + b)
        if momentum:
            m = momentum * m + (1 - momentum) * u
            u = m
        theta = theta + u
    return theta


@pytest.mark.parametrize("kw", [dict(), dict(reduce_dims=(1,)), dict(reduce_dims="all"),
                                dict(momentum=0.9, clip_value=0.5, extra_l2=0.01)])
def test_amos_matches_numpy_oracle(kw):
    rng = np.random.default_rng(0)
    w0 = rng.normal(0, 0.3, (5, 4))
    xs, ys = rng.normal(size=(20, 7, 4)), rng.normal(size=(20, 7, 5))
    # loss_t = mean((x W^T - y)^2): gradient in closed form for the oracle
    grads = [lambda w, x=x, y=y: 2 * (x @ w.T - y).T @ x / y.size for x, y in zip(xs, ys)]
    reduced = {(1,): (1,), "all": (0, 1)}.get(kw.get("reduce_dims"), ())
    ref = _amos_oracle(w0, grads, xi=0.05, eta=0.3, beta=0.98, reduced=reduced, momentum=kw.get("momentum"),
                       clip=kw.get("clip_value"), extra_l2=kw.get("extra_l2", 0.0))
    w = torch.tensor(w0, requires_grad=True)
    opt = Amos([w], lr=0.05, eta=0.3, beta=0.98, **kw)
    for x, y in zip(xs, ys):
        opt.zero_grad()
        ((torch.tensor(x) @ w.T - torch.tensor(y)) ** 2).mean().backward()
        opt.step()
    assert np.abs(w.detach().numpy() - ref).max() <= 1e-6
    assert np.abs(ref - w0).max() > 1e-3  # it moved
    if "reduce_dims" in kw:
        assert opt.state[w]["v"].numel() < w.numel()  # the reduced-memory variant


def test_amos_default_eta_is_init_rms_and_float32_close():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(8, 8) * 0.2)
    rms = w.detach().pow(2).mean().sqrt().item()
    opt = Amos([w], lr=0.02)
    w.sum().backward()
    opt.step()
    assert opt.state[w]["eta"] == pytest.approx(rms)


def test_ema_matches_averaged_model():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    model = _mlp()
    ema = EMA(model, decay=0.9)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=False)
    ref.update_parameters(model)  # first call copies, like EMA's construction
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for b in _data():
        opt.zero_grad()
        _loss(model, b).backward()
        opt.step()
        ema.update(model)
        ref.update_parameters(model)
    raw = [p.detach().clone() for p in model.parameters()]
    with ema.swapped(model):
        for p, q in zip(model.parameters(), ref.module.parameters()):
            assert (p - q).abs().max().item() <= 1e-7
    for p, r in zip(model.parameters(), raw):  # swapped back
        assert torch.equal(p, r)


def test_ramped_ema_is_a_direct_average_with_the_ramped_decay():
    from kexue.optim import RampedEMA
    model = _mlp()
    ema = RampedEMA(model, decay=0.5)
    ref = [p.detach().double().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for n, b in enumerate(_data()):
        opt.zero_grad()
        _loss(model, b).backward()
        opt.step()
        ema.update(model)
        lam = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.18, 0.25, ... then 0.5
        ref = [lam * r + (1 - lam) * p.detach().double() for r, p in zip(ref, model.parameters())]
        assert ema.decay == lam
    with ema.swapped(model):
        for p, r in zip(model.parameters(), ref):
            assert (p.double() - r).abs().max().item() <= 1e-6


def test_schedules_closed_forms():
    f = WarmupLinear(10, 110)
    assert f(0) == 0 and f(5) == 0.5 and f(10) == 1 and f(60) == pytest.approx(0.5) and f(200) == 0
    c = WarmupCosine(0, 100, min_ratio=0.1)
    assert c(0) == 1 and c(50) == pytest.approx(0.55) and c(100) == pytest.approx(0.1)
    p = PiecewiseLinear({0: 0.0, 100: 1.0, 1000: 0.1})
    assert p(50) == 0.5 and p(550) == pytest.approx(0.55) and p(5000) == pytest.approx(0.1)


def test_amos_strategies():
    hp = amos_hparams(q=0.02, xi=0.01)
    assert hp["lr"] == pytest.approx(2e-4) and hp["decay"] == pytest.approx(0.5e-4)
    assert hp["lr"] * hp["weight_decay"] == pytest.approx(hp["decay"])  # torch AdamW convention
    d = AmosDecay(xi=0.1)
    # b recursion with gamma = xi^2 / sqrt(1 + c sqrt(xi) b); closed form for the first steps
    b1 = 0.01
    assert d.b(1) == pytest.approx(b1)
    g2 = 0.01 / math.sqrt(1 + 0.25 * math.sqrt(0.1) * b1)
    assert d.b(2) == pytest.approx(b1 + g2 * (1 + b1))
    lrs = [d(t, 0.5)[0] for t in range(0, 5000, 500)]
    assert all(x > y for x, y in zip(lrs, lrs[1:])) and lrs[0] == 1.0
    model = _mlp()
    opt = torch.optim.AdamW(param_groups_by_scale(model, xi=0.1))
    sched = AmosSchedule(opt, xi=0.1)
    g = opt.param_groups[0]
    assert g["lr"] == pytest.approx(0.1 * g["q"])
    for _ in range(3):
        sched.step()
    assert g["lr"] == pytest.approx(0.1 * g["q"] / (1 + 0.25 * math.sqrt(0.1 * g["q"]) * d.b(3)))

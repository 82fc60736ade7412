"""Tiger against a NumPy transcription of the post's reference optimizer (github.com/bojone/tiger,
``tiger.py``: ``Tiger._prepare`` / ``_resource_apply`` and its ``piecewise_linear``), step by step: dense
and sparse gradients, the per-kind learning rates, the NaN guard, a piecewise-linear schedule, and the
momentum-as-accumulator gradient accumulation; plus accumulation == one big batch through ``fit``."""
import re

import numpy as np
import pytest
import torch
from torch import nn

from kexue.layers.norms import LayerNorm
from kexue.optim import PiecewiseLinear, Tiger, lambda_lr, tiger_param_groups
from kexue.train import fit


def np_piecewise_linear(t, schedule, from_zero=True):
    """The reference's ``piecewise_linear``, transcribed (tf.where -> python if)."""
    schedule = sorted(schedule.items())
    if from_zero and schedule[0][0] != 0:
        schedule = [(0, 0.0)] + schedule
    x = float(schedule[0][1])
    for i in range(len(schedule)):
        t_begin = schedule[i][0]
        x_begin = x
        if i != len(schedule) - 1:
            dx = schedule[i + 1][1] - schedule[i][1]
            dt = schedule[i + 1][0] - schedule[i][0]
            x = schedule[i][1] + 1.0 * dx / dt * (t - t_begin)
        else:
            x = float(schedule[i][1])
        x = x if t >= t_begin else x_begin
    return x


class NumpyTiger:
    """The reference optimizer, line by line, on NumPy arrays keyed by the Keras variable names."""

    def __init__(self, learning_rate=1e-3, beta=0.965, weight_decay=0.01, grad_accum_steps=1,
                 lr_schedule={0: 1}, shrink_ratio=0.99):
        self.learning_rate, self.beta, self.weight_decay = learning_rate, beta, weight_decay
        self.grad_accum_steps, self.shrink_ratio = grad_accum_steps, shrink_ratio
        self.lr_schedule = {int(i): j for i, j in lr_schedule.items()}
        self.iterations = 0
        self.m = {}

    def apply_gradients(self, grads_and_vars):
        # _prepare
        t, b, d, k, s = self.iterations, self.beta, self.weight_decay, self.grad_accum_steps, self.shrink_ratio
        b1 = b if t % k == 0 else 1.0
        b2 = (1 - b) / k
        lr = self.learning_rate * np_piecewise_linear(t, self.lr_schedule)
        lr = lr if (t + 1) % k == 0 else 0.0
        for name, grad, var in grads_and_vars:  # _resource_apply
            indices = None
            if isinstance(grad, tuple):  # IndexedSlices
                indices, grad = grad
            d_, lr_, b1_ = d, lr, b1
            is_nan = np.isnan(grad).any()
            b1_ = 1.0 if is_nan else b1_
            g = np.zeros_like(grad) if is_nan else grad
            m = self.m.setdefault(name, np.zeros_like(var))
            c = 0
            if re.findall('bias|beta|gamma', name):
                lr_, d_ = lr_ * 0.5, 0
                if 'gamma' in name:
                    c = 1
            elif 'embeddings' in name:
                lr_ = lr_ * np.sqrt(np.mean(var ** 2, axis=-1, keepdims=True))
            else:
                lr_ = lr_ * np.sqrt(np.mean(var ** 2))
            if indices is None:
                m[...] = b1_ * m + b2 * g
            else:
                m[...] = b1_ * m
                np.add.at(m, indices, b2 * g)  # _resource_scatter_add
            u = (np.sign(m) + d_ * var) * lr_
            var[...] = (var - c) * s + c if is_nan else var - u
        self.iterations += 1


# Keras names (which drive the reference's rules) -> the kinds that Tiger's param groups carry
SHAPES = {"Dense/kernel": ((6, 5), "matrix"), "Embedding-Token/embeddings": ((7, 5), "embedding"),
          "Dense/bias": ((5,), "bias"), "Norm/gamma": ((5,), "gain"), "Norm/beta": ((5,), "bias")}


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_tiger_matches_reference(k, dtype, tol):
    rng = np.random.default_rng(k)
    init = {n: rng.normal(size=s) + (1.0 if n == "Norm/gamma" else 0.0) for n, (s, _) in SHAPES.items()}
    ref_vars = {n: v.astype(np.float64) for n, v in init.items()}
    params = {n: nn.Parameter(torch.tensor(v, dtype=dtype)) for n, v in init.items()}
    schedule = {4: 1.0, 10: 0.25}  # warm up from 0 over 4 micro-steps, then down to 0.25 at 10
    ref = NumpyTiger(learning_rate=0.05, grad_accum_steps=k, lr_schedule=schedule)
    opt = Tiger([{"params": [params[n]], "kind": kind} for n, (_, kind) in SHAPES.items()], lr=0.05,
                grad_accum_steps=k)
    sched = lambda_lr(opt, PiecewiseLinear({0: 0.0, **schedule}))  # the reference's from_zero start
    worst = 0.0
    for t in range(12):
        grads = {n: rng.normal(size=v.shape) for n, v in init.items()}
        if t == 5:
            grads["Dense/kernel"][2, 1] = np.nan  # NaN guard: shrink instead of update, momentum kept
            grads["Norm/gamma"][0] = np.nan
        sparse = t % 2 == 1  # the embedding gets an IndexedSlices / sparse COO gradient, with a repeated row
        feed = []
        for n, p in params.items():
            if sparse and n == "Embedding-Token/embeddings":
                idx = np.array([1, 4, 1])
                vals = rng.normal(size=(3, 5))
                feed.append((n, (idx, vals), ref_vars[n]))
                p.grad = torch.sparse_coo_tensor(torch.tensor(idx)[None], torch.tensor(vals, dtype=dtype), (7, 5),
                                                 check_invariants=True)
            else:
                feed.append((n, grads[n], ref_vars[n]))
                p.grad = torch.tensor(grads[n], dtype=dtype)
        ref.apply_gradients(feed)
        opt.step()
        sched.step()
        for n, p in params.items():
            diff = np.abs(p.detach().double().numpy() - ref_vars[n]).max()
            worst = max(worst, diff)
            assert diff <= tol, (t, n, diff)
    moved = {n: np.abs(ref_vars[n] - init[n]).max() for n in init}
    assert min(moved.values()) > 1e-3, moved  # every kind really moved
    assert worst <= tol
    print(f"Tiger vs reference (k={k}, {dtype}): max |diff| {worst:.2e}")


def test_tiger_accumulation_equals_big_batch():
    """grad_accum_steps=k with a step() per micro-batch == k=1 on the averaged gradient (fit's grad_accum)."""
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 5, generator=g), torch.randn(4, 2, generator=g)) for _ in range(12)]
    loss = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
    models = []
    for opt_k, fit_k in ((3, 1), (1, 3)):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
        fit(m, loss, data, optimizer=Tiger(m, lr=0.02, grad_accum_steps=opt_k), grad_accum=fit_k, progress=False)
        models.append(m)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert (p - q).abs().max().item() <= 1e-6
    torch.manual_seed(0)
    fresh = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    assert (fresh[0].weight - models[0][0].weight).abs().max() > 1e-3  # it trained


def test_tiger_param_groups_kinds():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.token = nn.Embedding(10, 4)
            self.dense = nn.Linear(4, 4)
            self.norm = LayerNorm(4, cond_dim=3)
            self.torch_norm = nn.LayerNorm(4)
            self.head = nn.Linear(4, 2, bias=False)
            self.head.weight = self.dense.weight  # tied: first kind wins
            self.frozen = nn.Linear(4, 4)
            self.frozen.requires_grad_(False)

    net = Net()
    kinds = {id(p): g["kind"] for g in tiger_param_groups(net) for p in g["params"]}
    expect = {net.token.weight: "embedding", net.dense.weight: "matrix", net.dense.bias: "bias",
              net.norm.weight: "gain", net.norm.bias: "bias", net.norm.cond_gamma.weight: "bias",
              net.norm.cond_beta.weight: "bias", net.torch_norm.weight: "gain", net.torch_norm.bias: "bias"}
    assert kinds == {id(p): k for p, k in expect.items()}
    opt = Tiger(net)
    assert sorted(g["kind"] for g in opt.param_groups) == ["bias", "embedding", "gain", "matrix"]


def test_tiger_bad_input():
    p = [nn.Parameter(torch.ones(3))]
    with pytest.raises(ValueError, match="kind"):
        Tiger(p)
    with pytest.raises(ValueError, match="kind"):
        Tiger(p, kind="weights")
    with pytest.raises(ValueError, match="grad_accum_steps"):
        Tiger(p, kind="bias", grad_accum_steps=0)
    with pytest.raises(ValueError, match="beta"):
        Tiger(p, kind="bias", beta=1.0)
    with pytest.raises(ValueError, match="same"):
        Tiger([{"params": p, "grad_accum_steps": 2}, {"params": [nn.Parameter(torch.ones(2))]}], kind="bias")

"""kexue's Amos against the reference implementation, jestimator's ``amos.py`` (JAX/optax), step by step.

The reference runs in its own virtualenv ``.venv-jax`` (``make .venv-jax``; ``make test`` builds it)
through ``tests/oracles/jestimator_amos.py`` in a subprocess. Without that venv the test is skipped
locally and fails under CI (``CI=true``), where ``make test`` must have built it.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from kexue.optim import Amos

REPO = Path(__file__).resolve().parents[2]
JAX_PYTHON = REPO / ".venv-jax" / "bin" / "python"
ORACLE = REPO / "tests" / "oracles" / "jestimator_amos.py"
STEPS = 20


def _need_venv():
    if JAX_PYTHON.exists():
        return
    msg = f"{JAX_PYTHON} missing: run `make .venv-jax` (jax/flax/optax CPU + jestimator from PyPI)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    return dict(w=rng.normal(0, 0.3, (5, 4)), b=np.zeros(5), x=rng.normal(size=(STEPS, 7, 4)),
                y=rng.normal(size=(STEPS, 7, 5)))


def _reference(prob, dtype, eta, shape, options, lr=None, lr_schedule=None):
    payload = dict(params={"w": prob["w"].tolist(), "b": prob["b"].tolist()}, x=prob["x"].tolist(),
                   y=prob["y"].tolist(), eta=eta, shape=shape, dtype=dtype, lr=lr, lr_schedule=lr_schedule,
                   options=options)
    out = subprocess.run([str(JAX_PYTHON), str(ORACLE)], input=json.dumps(payload), capture_output=True,
                         text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if out.returncode:
        raise AssertionError(f"jestimator oracle failed:\n{out.stderr[-3000:]}")
    return [{k: np.asarray(v) for k, v in step.items()} for step in json.loads(out.stdout)["trajectory"]]


def _kexue(prob, dtype, eta, kw, lr, lr_schedule=None):
    w = torch.nn.Parameter(torch.tensor(prob["w"], dtype=dtype))
    b = torch.nn.Parameter(torch.tensor(prob["b"], dtype=dtype))
    opt = Amos([dict(params=[w], eta=eta["w"]), dict(params=[b], eta=eta["b"])], lr=lr, **kw)
    trajectory = []
    for t in range(STEPS):
        if lr_schedule is not None:
            for group in opt.param_groups:
                group["lr"] = lr_schedule[t]
        x, y = (torch.tensor(a[t], dtype=dtype) for a in (prob["x"], prob["y"]))
        opt.zero_grad()
        ((x @ w.T + b - y) ** 2).mean().backward()
        opt.step()
        trajectory.append({"w": w.detach().double().numpy().copy(), "b": b.detach().double().numpy().copy()})
    return trajectory


ETA = {"w": 0.3, "b": 0.5}
# (kexue keyword arguments, jestimator slot shapes for w (5, 4) and b (5,), jestimator keyword arguments)
VARIANTS = {
    "full": (dict(), {"w": None, "b": None}, dict()),
    "reduce_rows": (dict(reduce_dims=(1,)), {"w": [5, 1], "b": [1]}, dict()),
    "reduce_all": (dict(reduce_dims="all"), {"w": [1, 1], "b": []}, dict()),
    "momentum_clip_l2": (dict(momentum=0.9, clip_value=0.05, extra_l2=0.01), {"w": None, "b": None},
                         dict(momentum=0.9, clip_value=0.05, extra_l2=0.01)),
    "coefs": (dict(d_coef=0.5, c_coef=0.1, beta=0.9, reduce_dims=(1,)), {"w": [5, 1], "b": [1]},
              dict(d_coef=0.5, c_coef=0.1, beta=0.9)),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_amos_matches_jestimator_float64(name):
    _need_venv()
    kw, shape, options = VARIANTS[name]
    kw = {"beta": 0.98, **kw}
    options = {"beta": 0.98, **options}
    prob = _problem()
    ref = _reference(prob, "float64", ETA, shape, options, lr=0.05)
    ours = _kexue(prob, torch.float64, ETA, kw, lr=0.05)
    for t, (r, o) in enumerate(zip(ref, ours)):
        for k in ("w", "b"):
            assert np.abs(r[k] - o[k]).max() <= 1e-6, f"{name}: step {t + 1}, {k}"
    assert np.abs(ref[-1]["w"] - prob["w"]).max() > 1e-3  # the parameters moved


def test_amos_matches_jestimator_schedule_and_float32():
    """A per-step learning rate (jestimator's callable schedule of the 1-based count = kexue's
    group lr set before each step), and the float32 path of both."""
    _need_venv()
    prob = _problem(1)
    schedule = [0.05 * (1 + t) / STEPS for t in range(STEPS)]
    ref = _reference(prob, "float64", ETA, {"w": None, "b": None}, {"beta": 0.98}, lr_schedule=schedule)
    ours = _kexue(prob, torch.float64, ETA, {"beta": 0.98}, lr=schedule[0], lr_schedule=schedule)
    for r, o in zip(ref, ours):
        assert max(np.abs(r[k] - o[k]).max() for k in ("w", "b")) <= 1e-6
    ref32 = _reference(prob, "float32", ETA, {"w": None, "b": None}, {"beta": 0.98}, lr=0.05)
    ours32 = _kexue(prob, torch.float32, ETA, {"beta": 0.98}, lr=0.05)
    for r, o in zip(ref32, ours32):
        assert max(np.abs(r[k] - o[k]).max() for k in ("w", "b")) <= 1e-6

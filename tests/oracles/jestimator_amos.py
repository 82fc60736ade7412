"""Run jestimator's published Amos (``jestimator/amos.py``) on a JSON problem; print the trajectory.

Runs inside ``.venv-jax`` (see the Makefile target), never imported by kexue. Reads from stdin::

    {"params": {"w": (out, in), "b": (out,)}, "x": [(batch, in) per step], "y": [(batch, out) per step],
     "eta": {name: float}, "shape": {name: list | null}, "dtype": "float64" | "float32",
     "lr": float | null, "lr_schedule": [float per step] | null, "options": {beta, momentum, clip_value, ...}}

and writes ``{"trajectory": [{name: nested list} after each step]}`` to stdout. The loss of step t is
``mean((x_t w^T + b - y_t)^2)``, differentiated by ``jax.grad`` at the current parameters, so both
sides are compared step by step on their own trajectories.

``import jestimator`` itself fails with today's JAX: the package ``__init__`` imports
``jestimator.amos_helper``, which does ``from jax.experimental.pjit import PartitionSpec`` (removed
from JAX). The optimizer module ``jestimator/amos.py`` has no such import, so it is loaded by path.
"""
import importlib.util
import json
import sys
import sysconfig
from pathlib import Path


def load_amos():
    path = Path(sysconfig.get_paths()["purelib"]) / "jestimator" / "amos.py"
    spec = importlib.util.spec_from_file_location("jestimator_amos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    problem = json.load(sys.stdin)
    import jax

    jax.config.update("jax_enable_x64", problem["dtype"] == "float64")
    import jax.numpy as jnp

    amos = load_amos()
    dtype = getattr(jnp, problem["dtype"])
    params = {k: jnp.asarray(v, dtype=dtype) for k, v in problem["params"].items()}
    eta, shape = problem["eta"], problem["shape"]

    def eta_fn(name, _shape):
        return eta[name[0]]

    def shape_fn(name, full):
        return tuple(shape[name[0]]) if shape[name[0]] is not None else full

    schedule = problem.get("lr_schedule")
    # optax counts steps from 1 inside scale_by_amos (count is incremented before use)
    lr = (lambda count: jnp.asarray(schedule, dtype=dtype)[count - 1]) if schedule else problem["lr"]
    tx = amos.amos(lr, eta_fn, shape_fn=shape_fn, **problem["options"])
    state = tx.init(params)
    trajectory = []
    def loss(p, x, y):
        return jnp.mean((x @ p["w"].T + p["b"] - y) ** 2)

    for x, y in zip(problem["x"], problem["y"]):
        grads = jax.grad(loss)(params, jnp.asarray(x, dtype=dtype), jnp.asarray(y, dtype=dtype))
        updates, state = tx.update(grads, state, params)
        params = {k: params[k] + updates[k] for k in params}
        trajectory.append({k: jax.device_get(v).tolist() for k, v in params.items()})
    json.dump({"trajectory": trajectory, "jax": jax.__version__}, sys.stdout)


if __name__ == "__main__":
    main()

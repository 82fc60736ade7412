"""Fault tests of the training engine: non-finite losses / gradients / weights, run folders whose settings
changed, re-planned schedules, stale temp files, bf16 on CPUs that only emulate it, and the diffusion
model saved without pickle. Oracles: hand-written SGD loops and closed-form schedules."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from kexue.optim import PiecewiseLinear, WarmupLinear, lambda_lr
from kexue.train.loop import NonFiniteError, fit, native_bf16
from kexue.train.state import load_state

REPO = Path(__file__).resolve().parents[2]


def _data(n=8, nan_at=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)) for _ in range(n)]
    for k in nan_at:  # 1-based step numbers
        data[k - 1][0][0, 0] = float("nan")
    return data


def _model():
    torch.manual_seed(0)
    return nn.Linear(3, 1)


def _loss(m, b):
    return ((m(b[0]) - b[1]) ** 2).mean()


def _sgd_oracle(data, lrs):
    """Plain SGD by hand: w <- w - lr_t * grad_t, one batch per step."""
    m = _model()
    for (x, y), lr in zip(data, lrs):
        m.zero_grad()
        _loss(m, (x, y)).backward()
        with torch.no_grad():
            for p in m.parameters():
                p -= lr * p.grad
    return m


def _same_weights(a: nn.Module, b: nn.Module, tol=1e-7):
    return all((p - q).abs().max().item() <= tol for p, q in zip(a.parameters(), b.parameters()))


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    data, seen = _data(8, nan_at=[5]), {}
    ckpt = tmp_path / "state.safetensors"

    def loss_fn(m, b):
        if torch.isnan(b[0]).any():  # step 5: the step-4 checkpoint is on disk now
            seen["bytes"] = ckpt.read_bytes()
        return _loss(m, b)

    m = _model()
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(nan\) at step 5 .*last good checkpoint \(step 4\)"):
        fit(m, loss_fn, data, optimizer=torch.optim.SGD(m.parameters(), lr=0.1), checkpoint_dir=tmp_path,
            checkpoint_every=2, progress=False)
    assert ckpt.read_bytes() == seen["bytes"]  # bit for bit
    assert not (tmp_path / "model.safetensors").exists()
    state = load_state(ckpt)
    assert state["progress"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert _same_weights(m, _sgd_oracle(data[:4], [0.1] * 4))  # step 5 was never applied


def test_nonfinite_gradient_with_finite_loss_stops(tmp_path):
    m = _model()
    # d sqrt(z)/dz at z = 0 is inf: the loss is 0, the gradient NaN
    loss_fn = lambda m, b: torch.sqrt(m(b[0]).sum() * 0).mean()  # noqa: E731
    with pytest.raises(NonFiniteError, match=r"non-finite gradient norm \(nan\) at step 1 .*no checkpoint written"):
        fit(m, loss_fn, _data(2), optimizer=torch.optim.SGD(m.parameters(), lr=0.1), checkpoint_dir=tmp_path,
            progress=False)


def test_weights_that_overflow_are_never_checkpointed(tmp_path):
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=1e-4)
    sched = lambda_lr(opt, PiecewiseLinear({1: 1.0, 2: 2e42}))  # step 3: lr 2e38 x gradients ~1e3 = inf weights
    loss_fn = lambda m, b: 1e3 * _loss(m, b)  # noqa: E731
    with pytest.raises(NonFiniteError, match=r"weights became non-finite by step 3.*last good checkpoint \(step 2\)"):
        fit(m, loss_fn, _data(6), optimizer=opt, scheduler=sched, checkpoint_dir=tmp_path, checkpoint_every=1,
            progress=False)
    state = load_state(tmp_path / "state.safetensors")
    assert state["progress"]["step"] == 2 and all(torch.isfinite(t).all() for t in state["model"].values())


def test_skip_mode_counts_and_reports_skipped_steps(tmp_path, capsys):
    data = _data(8, nan_at=[3, 6])
    m = _model()
    hist = fit(m, _loss, data, optimizer=torch.optim.SGD(m.parameters(), lr=0.1), on_nonfinite="skip",
               checkpoint_dir=tmp_path, progress=False)
    assert hist["skipped"] == [3, 6] and hist["step"] == [1, 2, 4, 5, 7, 8] and len(hist["loss"]) == 6
    assert "skipped 2 of 8 steps" in capsys.readouterr().err
    # SGD without momentum: skipping a batch is the same as not having it
    assert _same_weights(m, _sgd_oracle([b for i, b in enumerate(data) if i + 1 not in (3, 6)], [0.1] * 6))
    assert load_state(tmp_path / "state.safetensors")["progress"]["step"] == 8


def _run(folder, lr=0.1, steps=3, opt=torch.optim.SGD, data=None, **kw):
    m = _model()
    hist = fit(m, _loss, data or _data(8), optimizer=opt(m.parameters(), lr=lr), steps=steps, checkpoint_dir=folder,
               progress=False, **kw)
    return m, hist


def test_changed_settings_are_refused_naming_each(tmp_path):
    _run(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError) as e:
        _run(tmp_path, lr=0.2, opt=torch.optim.Adam, data=_data(8, seed=1))
    msg = str(e.value)
    for diff in ('optimizer.class: "SGD" -> "Adam"', "optimizer.lr: 0.1 -> 0.2", "data: "):
        assert diff in msg, (diff, msg)
    assert "--resume" in msg and "--overwrite" in msg and "\n" not in msg
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing touched
    m, hist = _run(tmp_path)  # the same settings: continues (here: already finished, nothing to do)
    assert hist["step"] == [1, 2, 3] and _same_weights(m, _sgd_oracle(_data(8), [0.1] * 3))


def test_overwrite_starts_over(tmp_path):
    _run(tmp_path / "a")
    m, hist = _run(tmp_path / "a", lr=0.2, overwrite=True)
    fresh, fresh_hist = _run(tmp_path / "b", lr=0.2)
    assert hist == fresh_hist and _same_weights(m, fresh, 0.0)
    assert json.loads((tmp_path / "a" / "settings.json").read_text())["optimizer"]["lr"] == 0.2
    with pytest.raises(ValueError, match="exclude each other"):
        _run(tmp_path / "a", resume=True, overwrite=True)


def test_resume_continues_with_the_new_settings(tmp_path):
    _run(tmp_path)
    m, hist = _run(tmp_path, lr=0.2, steps=6, resume=True)
    assert hist["step"] == [1, 2, 3, 4, 5, 6] and hist["lr"] == [0.1] * 3 + [0.2] * 3
    assert _same_weights(m, _sgd_oracle(_data(8), [0.1] * 3 + [0.2] * 3))
    assert json.loads((tmp_path / "settings.json").read_text())["steps"] == 6


def test_extending_steps_replans_the_schedule(tmp_path):
    data = _data(10) * 2

    def run(steps, **kw):
        m = _model()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return m, fit(m, _loss, data, optimizer=opt, steps=steps, scheduler=lambda_lr(opt, WarmupLinear(2, steps)),
                      checkpoint_dir=tmp_path, checkpoint_every=5, progress=False, **kw)

    def closed_form(t, total, warmup=2):  # lr factor of update t (0-based): warm-up, then linear to 0
        return t / warmup if t < warmup else 1 - (t - warmup) / (total - warmup)

    run(10)
    with pytest.raises(ValueError, match=r"steps: 10 -> 20.*scheduler.lr_lambdas\[0\].total: 10 -> 20"):
        run(20)
    m, hist = run(20, resume=True)
    lrs = [0.1 * closed_form(t, 10) for t in range(10)] + [0.1 * closed_form(t, 20) for t in range(10, 20)]
    assert hist["lr"] == pytest.approx(lrs, abs=1e-12) and min(hist["lr"][10:]) > 0  # not lr 0
    assert _same_weights(m, _sgd_oracle(data, lrs))


def test_stale_temp_files_of_a_killed_write_are_removed(tmp_path):
    # a process killed inside atomic_write leaves its temp file behind
    killer = ("import os, sys; from kexue.io import atomic_write\n"
              "def write(tmp):\n    open(tmp, 'wb').write(b'partial'); os._exit(9)\n"
              "atomic_write(sys.argv[1], write)\n")
    proc = subprocess.run([sys.executable, "-c", killer, str(tmp_path / "state.safetensors")],
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 9
    (tmp_path / ".model.safetensors.tmp1234").write_bytes(b"x")  # the older pid-suffixed form
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".keep").write_text("mine")
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    _run(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".keep", "model.safetensors", "notes.txt", "settings.json", "state.safetensors"]


def test_bf16_only_where_native(tmp_path, capsys):
    m = _model()
    if native_bf16("cpu"):
        _run(tmp_path, bf16="auto")
        assert json.loads((tmp_path / "settings.json").read_text())["bf16"] is True
    else:
        with pytest.raises(ValueError, match="no native bfloat16"):
            fit(m, _loss, _data(2), optimizer=torch.optim.SGD(m.parameters(), lr=0.1), bf16=True, progress=False)
        _run(tmp_path, bf16="auto")
        assert json.loads((tmp_path / "settings.json").read_text())["bf16"] is False
        assert "trains in fp32" in capsys.readouterr().err


def test_diffusion_save_load_round_trip_without_pickle(tmp_path):
    from safetensors import safe_open

    from kexue.cli import main as cli
    from kexue.diffusion import methods
    from kexue.diffusion.folder import load_model, save_model

    out = tmp_path / "model"
    assert cli(["diffusion", "--method", "ddim", "--train-steps", "2", "--width", "8", "--n", "4", "--nfe", "2",
                "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "samples.png", "train", "manifest.json"} <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())  # one unit; the run folder kept beside the model
    assert manifest["kind"] == "diffusion" and manifest["other"] == ["train"] and "samples.png" in manifest["files"]
    # the same command again continues the finished run instead of retraining (the run folder records it)
    assert cli(["diffusion", "--method", "ddim", "--train-steps", "2", "--width", "8", "--n", "4", "--nfe", "2",
                "--out", str(out)]) == 0
    # a changed setting is refused by name
    assert cli(["diffusion", "--method", "ddim", "--train-steps", "2", "--width", "16", "--n", "4", "--nfe", "2",
                "--out", str(out)]) == 2
    with safe_open(str(out / "model.safetensors"), "pt") as f:  # a safetensors file, not a pickle
        assert len(list(f.keys())) > 0
    model, cfg = load_model(out)
    assert cfg["kind"] == "eps" and cfg["width"] == 8 and cfg["method"] == "ddim"
    torch.manual_seed(1)
    fresh = methods.build("shortcut", 1, 8)
    save_model(fresh, tmp_path / "m2", kind="shortcut", channels=1, width=8)
    back, _ = load_model(tmp_path / "m2")
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x, t, t), back(x, t, t))
    cfg_path = tmp_path / "m2" / "config.json"
    cfg_path.write_text(json.dumps({"kind": "shortcut", "channels": 1, "width": 16}))
    with pytest.raises(ValueError, match="config.json: .* bytes, but manifest.json records"):
        load_model(tmp_path / "m2")  # the folder's manifest sees the edit
    (tmp_path / "m2" / "manifest.json").unlink()  # a folder of an older kexue: the weights must still fit
    with pytest.raises(ValueError, match="does not fit a shortcut model of width 16"):
        load_model(tmp_path / "m2")


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    """Files kexue writes are readable like any file open() creates (mkstemp alone would give 0600)."""
    import os

    from kexue.io import write_json

    mask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(mask)
    assert (path.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("data, accum, n", [([], 1, "0 batches"), (_data(2), 3, "2 batches")])
def test_empty_or_too_small_data_is_named(data, accum, n):
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=f"fit: an epoch has {n}, fewer than grad_accum \\({accum}\\): the data is "
                                         "empty or too small for one optimizer step"):
        fit(model, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), data, grad_accum=accum, progress=False,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))

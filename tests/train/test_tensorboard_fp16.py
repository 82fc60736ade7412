"""fit's TensorBoard event files (read back with TensorBoard's own EventAccumulator, compared with the returned
history) and its fp16 path (autocast + GradScaler), run on the CPU through ``fp16_device="cpu"`` against the
loop of PyTorch's AMP docs written out by hand."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from kexue.train import tensorboard as tb
from kexue.train.loop import fit
from kexue.train.state import load_state

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def _data(n=10, big=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(4, 8, generator=g), torch.randn(4, 1, generator=g)) for _ in range(n)]
    for k in big:  # 1-based steps whose scaled fp16 gradients overflow
        data[k - 1] = (data[k - 1][0] * 3e4, data[k - 1][1] * 3e4)
    return data


def _dict_loss(m, b):
    err = m(b[0]) - b[1]
    mse, mae = (err ** 2).mean(), err.abs().mean()
    return {"loss": mse + 0.1 * mae, "mse": mse.detach(), "mae": mae.detach()}


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _f32(values) -> list[float]:
    return [float(np.float32(v)) for v in values]


def _fit(model, data, loss=_dict_loss, **kw):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
    return fit(model, loss, data, optimizer=opt, scheduler=sched, clip_norm=1.0, progress=False, **kw)


def test_event_files_hold_the_history(tmp_path):
    calls = []

    def metric(state):
        calls.append(state.step)
        return {"dev_mse": float(sum(((state.model(x) - y) ** 2).mean() for x, y in _data(2, seed=1))),
                "note": "text is not a scalar"}

    hist = _fit(_model(), _data(), epochs=2, log_dir=tmp_path / "tb", callbacks=[metric], eval_every=3)
    got = _scalars(tmp_path / "tb")
    steps = hist["step"]
    assert steps == list(range(1, 21))
    for tag, key in (("train/loss", "loss"), ("train/mse", "mse"), ("train/mae", "mae"), ("train/lr", "lr"),
                     ("train/grad_norm", "grad_norm")):
        assert got[tag] == list(zip(steps, _f32(hist[key]))), tag
    assert got["eval/dev_mse"] == [(r["step"], float(np.float32(r["dev_mse"]))) for r in hist["eval"]]
    assert [r["step"] for r in hist["eval"]] == calls == [3, 6, 9, 10, 12, 15, 18, 20]
    assert "eval/note" not in got and "train/loss_scale" not in got
    assert len(set(hist["lr"])) == 20 and max(hist["grad_norm"]) > 1.0  # clipped steps log the norm before clipping


def test_resumed_run_logs_each_step_once(tmp_path, monkeypatch):
    flushing = tb.TensorBoardLog.step

    def step_and_flush(self, *a, **k):  # the interrupted run's events after its checkpoint reach the disk
        flushing(self, *a, **k)
        self.flush()

    monkeypatch.setattr(tb.TensorBoardLog, "step", step_and_flush)
    data = _data()
    full = _fit(_model(), data, checkpoint_dir=tmp_path / "a", log_dir=tmp_path / "tb_a", checkpoint_every=4)

    def crash_at_7(m, b):
        if b is data[6]:
            raise KeyboardInterrupt
        return _dict_loss(m, b)

    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), data, crash_at_7, checkpoint_dir=tmp_path / "b", log_dir=tmp_path / "tb_b", checkpoint_every=4)
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    def raw_steps(folder):
        return sorted(e.step for f in sorted(folder.iterdir()) for e in EventFileLoader(str(f)).Load()
                      for v in e.summary.value if v.tag == "train/loss")

    assert raw_steps(tmp_path / "tb_b") == [1, 2, 3, 4, 5, 6]  # steps 5, 6 logged after the step-4 checkpoint
    resumed = _fit(_model(), data, checkpoint_dir=tmp_path / "b", log_dir=tmp_path / "tb_b", checkpoint_every=4)
    assert resumed["loss"] == full["loss"] and resumed["grad_norm"] == full["grad_norm"]
    assert raw_steps(tmp_path / "tb_b") == [1, 2, 3, 4, 5, 5, 6, 6, 7, 8, 9, 10]  # 5, 6 written twice on disk
    got = _scalars(tmp_path / "tb_b")
    assert got["train/loss"] == list(zip(range(1, 11), _f32(full["loss"])))  # ... and shown once, the resumed ones
    assert got["train/grad_norm"] == _scalars(tmp_path / "tb_a")["train/grad_norm"]


def test_missing_tensorboard_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"fit\(log_dir=\.\.\.\): TensorBoard logging needs the tensorboard "
                                          r"package .*pip install tensorboard"):
        _fit(_model(), _data(2), log_dir=tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


# --- fp16 ------------------------------------------------------------------------------------------------

def _amp_oracle(data, clip=1.0, device="cpu"):
    """PyTorch's AMP recipe ("Automatic Mixed Precision examples": gradient clipping), with the scheduler."""
    model = _model().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
    scaler = torch.amp.GradScaler(device)
    losses, skipped = [], []
    for step, batch in enumerate(data, 1):
        opt.zero_grad()
        with torch.autocast(device, dtype=torch.float16):
            loss = _dict_loss(model, batch)["loss"]
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < before:
            skipped.append(step)
        sched.step()
        losses.append(loss.item())
    return model, losses, skipped, scaler.state_dict()


def test_fp16_path_equals_the_amp_recipe(tmp_path):
    data = _data(10, big=(3, 7))
    oracle, losses, skipped, scaler_state = _amp_oracle(data)
    assert skipped == [3, 7]  # the oversized batches overflow in fp16 and are skipped by the scaler
    model = _model()
    hist = _fit(model, data, fp16=True, fp16_device="cpu", checkpoint_dir=tmp_path / "run", log_dir=tmp_path / "tb")
    assert hist["overflow"] == skipped and hist["skipped"] == []
    assert hist["loss"] == pytest.approx(losses, abs=1e-6, rel=1e-6)
    for p, q in zip(model.parameters(), oracle.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    assert load_state(tmp_path / "run" / "state.safetensors")["scaler"] == scaler_state
    scale = _scalars(tmp_path / "tb")["train/loss_scale"]
    assert [s for s, _ in scale] == list(range(1, 11)) and scale[-1][1] == scaler_state["scale"]
    assert [i + 1 for i, g in enumerate(hist["grad_norm"]) if not np.isfinite(g)] == [3, 7]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA fp16 path needs a GPU")
def test_fp16_on_cuda_equals_the_amp_recipe():
    data = [(x.cuda(), y.cuda()) for x, y in _data(10, big=(3, 7))]
    oracle, losses, skipped, scaler_state = _amp_oracle(data, device="cuda")
    model = _model().cuda()
    hist = _fit(model, data, fp16=True)
    assert hist["overflow"] == skipped and hist["loss"] == pytest.approx(losses, abs=1e-6, rel=1e-6)
    for p, q in zip(model.parameters(), oracle.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


def test_fp16_scaler_resumes(tmp_path):
    data = _data(10, big=(3,))
    full_model = _model()
    full = _fit(full_model, data, fp16=True, fp16_device="cpu", checkpoint_dir=tmp_path / "a", checkpoint_every=4)

    def crash_at_6(m, b):
        if b is data[5]:
            raise KeyboardInterrupt
        return _dict_loss(m, b)

    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), data, crash_at_6, fp16=True, fp16_device="cpu", checkpoint_dir=tmp_path / "b", checkpoint_every=4)
    saved = load_state(tmp_path / "b" / "state.safetensors")
    assert saved["progress"]["step"] == 4 and saved["scaler"]["scale"] == 65536.0 / 2  # step 3 backed off
    model = _model()
    resumed = _fit(model, data, fp16=True, fp16_device="cpu", checkpoint_dir=tmp_path / "b", checkpoint_every=4)
    assert resumed["loss"] == full["loss"] and resumed["overflow"] == full["overflow"] == [3]
    for p, q in zip(model.parameters(), full_model.parameters()):
        assert torch.equal(p, q)
    assert load_state(tmp_path / "b" / "state.safetensors")["scaler"] == \
        load_state(tmp_path / "a" / "state.safetensors")["scaler"]


def test_fp16_refusals(monkeypatch):
    with pytest.raises(ValueError, match=r"fp16=True needs a CUDA GPU: this model is on cpu"):
        _fit(_model(), _data(2), fp16=True)
    import kexue.train.loop as loop

    monkeypatch.setattr(loop, "native_bf16", lambda device: True)
    with pytest.raises(ValueError, match="fp16 and bf16 exclude each other"):
        _fit(_model(), _data(2), fp16=True, fp16_device="cpu", bf16=True)

"""kexue.optim.adamw_preset, the one optimizer preset: through fit it equals a hand-written AdamW loop (torch's
AdamW, lr set by the closed-form schedule, clip_grad_norm_), its lr follows the closed forms, its record lands
in settings.json, bad options are refused by name, and no trainer in the library builds AdamW itself."""
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from kexue.optim import Lion, adamw_preset
from kexue.optim.preset import warmup_steps
from kexue.train.loop import fit

PACKAGE = Path(__file__).resolve().parents[2] / "kexue"


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def _data(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=g), 3 * torch.randn(8, 3, generator=g)) for _ in range(n)]


def _loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _closed_form(schedule, w, total):
    """The multiplier of update t (t = 0, 1, ...), written from the definitions."""
    if schedule == "linear":
        return lambda t: t / max(1, w) if t < w else max(0.0, 1 - (t - w) / max(1, total - w))
    return lambda t: min(1.0, (t + 1) / w) if w > 0 else 1.0


@pytest.mark.parametrize("schedule, warmup, clip", [("linear", 0.25, 1.0), ("linear", 0, None), ("constant", 5, 0.5),
                                                    ("constant", 1, None)])
def test_preset_through_fit_equals_a_hand_written_adamw_loop(schedule, warmup, clip, tmp_path):
    data, lr, wd = _data(), 3e-2, 0.05
    total = len(data)
    a, b = _mlp(), _mlp()
    preset = adamw_preset(a.parameters(), lr, total, warmup=warmup, weight_decay=wd, schedule=schedule, clip_norm=clip)
    history = fit(a, _loss, data, steps=total, progress=False, checkpoint_dir=tmp_path,
                  **preset.fit_options({"mine": 1}))

    w = warmup if isinstance(warmup, int) else max(1, int(warmup * total))
    f = _closed_form(schedule, w, total)
    assert history["lr"] == pytest.approx([lr * f(t) for t in range(total)], rel=1e-12, abs=1e-15)
    opt = torch.optim.AdamW(b.parameters(), lr=lr, weight_decay=wd)  # the oracle: plain torch
    for t, batch in enumerate(data):
        for g in opt.param_groups:
            g["lr"] = lr * f(t)
        opt.zero_grad()
        _loss(b, batch).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(b.parameters(), clip)
        opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert (p - q).abs().max().item() <= 1e-6

    recorded = json.loads((tmp_path / "settings.json").read_text())
    assert recorded["optimizer_preset"] == {"optimizer": "AdamW", "lr": lr, "weight_decay": wd, "schedule": schedule,
                                            "warmup": w, "total_steps": total, "clip_norm": clip}
    assert recorded["mine"] == 1 and recorded["clip_norm"] == clip and recorded["optimizer"]["weight_decay"] == wd


def test_other_optimizer_classes_and_param_groups():
    m = _mlp()
    preset = adamw_preset([{"params": m[0].parameters(), "lr": 1e-3}, {"params": m[2].parameters()}], 1e-2, 10,
                          warmup=4, schedule="constant", optimizer_class=Lion)
    assert isinstance(preset.optimizer, Lion) and preset.settings["optimizer"] == "Lion"
    assert [g["lr"] for g in preset.optimizer.param_groups] == pytest.approx([1e-3 / 4, 1e-2 / 4])  # both warmed up
    opt, sched, clip, settings = preset  # unpacks like a tuple
    assert clip == 1.0 and settings["warmup"] == 4


def test_fractional_warmup_is_exact_integer_arithmetic():
    for total in range(1, 3001):
        assert warmup_steps(0.1, total) == max(1, total // 10)
        assert warmup_steps(0.25, total) == max(1, total // 4)
    assert warmup_steps(1.0, 7) == 7 and warmup_steps(0, 7) == 0 and warmup_steps(12, 7) == 12


@pytest.mark.parametrize("kw, msg", [
    ({"lr": 0}, "lr must be"), ({"lr": float("nan")}, "lr must be"),
    ({"weight_decay": -0.1}, "weight_decay must be"),
    ({"total_steps": 0}, "total_steps must be"), ({"total_steps": 2.5}, "total_steps must be"),
    ({"schedule": "cosine"}, "schedule must be one of linear, constant"),
    ({"warmup": -1}, "warmup must be >= 0"), ({"warmup": 1.5}, r"fractional warmup must be in \(0, 1\]"),
    ({"warmup": "10%"}, "warmup must be a number"),
    ({"clip_norm": 0}, "clip_norm must be"), ({"clip_norm": float("inf")}, "clip_norm must be"),
])
def test_bad_options_are_refused_by_name(kw, msg):
    args = {"lr": 1e-3, "total_steps": 10, **kw}
    with pytest.raises(ValueError, match=msg):
        adamw_preset(_mlp().parameters(), args.pop("lr"), args.pop("total_steps"), **args)


def test_no_trainer_builds_adamw_or_its_schedule_itself():
    """One home: AdamW and the warm-up schedules are constructed in kexue/optim only."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "optim":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"AdamW\(|WarmupLinear\(|PiecewiseLinear\(|lambda_lr\(", text):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, f"build the optimizer with kexue.optim.adamw_preset instead: {offenders}"


def test_decay_schedule_closed_form():
    """schedule="decay": min(1, (t+1)/w) up to t = w − 1, then linear to ``final`` at t = T, ``final`` after."""
    import torch

    from kexue.optim.preset import adamw_preset

    w, T, final, lr = 4, 20, 0.1, 1e-3
    p = adamw_preset([torch.nn.Parameter(torch.zeros(1))], lr, T, warmup=w, schedule="decay", final=final)
    got = []
    for _ in range(T + 3):
        got.append(p.optimizer.param_groups[0]["lr"])
        p.optimizer.step()
        p.scheduler.step()
    want = [lr * ((t + 1) / w if t < w - 1 else 1 + (final - 1) * (t - (w - 1)) / (T - (w - 1)) if t <= T else final)
            for t in range(T + 3)]
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-12
    assert p.settings["final"] == final and p.settings["schedule"] == "decay"
    with pytest.raises(ValueError, match="final=0.5 applies to schedule='decay' only"):
        adamw_preset([torch.nn.Parameter(torch.zeros(1))], lr, T, schedule="linear", final=0.5)

"""What fit keeps for its callbacks across an interruption: early stopping (``state.stop``) is final and
checkpointed, ``state_objects`` resume with the run, evaluations are not repeated after a resume, and
``resume=True`` refuses a model of another size instead of failing inside ``load_state_dict``."""
import pytest
import torch
from torch import nn

from kexue.train.loop import STATE_FILE, fit
from kexue.train.state import SettingsMismatch, load_state, read_progress


def _data():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)) for _ in range(4)]


def _loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


class Counter:
    """A stateful callback: counts its calls and remembers the weights of the last one (its state: both)."""

    def __init__(self, model, stop_at=None, interrupt_at=None):
        self.model, self.stop_at, self.interrupt_at = model, stop_at, interrupt_at
        self.calls, self.kept = 0, None

    def __call__(self, state):
        if state.step == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls += 1
        self.kept = {k: v.clone() for k, v in self.model.state_dict().items()}
        if state.step == self.stop_at:
            state.stop = True
        return {"calls": self.calls, "weight": float(self.model.weight.sum())}

    def state_dict(self):
        return {"calls": self.calls, "kept": self.kept}

    def load_state_dict(self, s):
        self.calls, self.kept = s["calls"], s["kept"]


def _run(folder, steps=12, stop_at=None, interrupt_at=None, width=1, **kw):
    torch.manual_seed(0)
    model = nn.Linear(3, width)
    cb = Counter(model, stop_at, interrupt_at)
    history = fit(model, _loss, _data(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), steps=steps,
                  callbacks=[cb], eval_every=2, checkpoint_dir=folder, checkpoint_every=2, progress=False,
                  state_objects={"counter": cb}, **kw)
    return model, cb, history


def test_interrupted_callbacks_and_state_objects_resume_exactly(tmp_path):
    straight, cb_s, h_s = _run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the evaluation of step 6, before its checkpoint
        _run(tmp_path / "cut", interrupt_at=6)
    assert read_progress(tmp_path / "cut" / STATE_FILE)["step"] == 4
    resumed, cb_r, h_r = _run(tmp_path / "cut")
    assert h_r["eval"] == h_s["eval"]  # every evaluation once, none repeated after the resume
    assert [r["step"] for r in h_r["eval"]] == [2, 4, 6, 8, 10, 12]
    assert cb_r.calls == cb_s.calls == 6
    for k in cb_s.kept:
        assert torch.equal(cb_r.kept[k], cb_s.kept[k])
        assert torch.equal(resumed.state_dict()[k], straight.state_dict()[k])
    assert load_state(tmp_path / "cut" / STATE_FILE)["objects"]["counter"]["calls"] == 6


def test_a_resumed_run_whose_last_evaluation_ran_repeats_nothing(tmp_path):
    _, _, h = _run(tmp_path / "run")
    _, cb, again = _run(tmp_path / "run")  # the same finished run: loaded, nothing trained or evaluated
    assert again["eval"] == h["eval"] and cb.calls == 6


def test_early_stop_is_checkpointed_and_final(tmp_path):
    model, cb, h = _run(tmp_path / "run", stop_at=6)
    assert h["step"][-1] == 6 and [r["step"] for r in h["eval"]] == [2, 4, 6]
    assert read_progress(tmp_path / "run" / STATE_FILE) == {"step": 6, "epoch": 1, "batch_in_epoch": 2,
                                                             "stopped": True}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model2, cb2, h2 = _run(tmp_path / "run", stop_at=6)  # rerun: stays stopped
    assert h2["step"] == h["step"] and cb2.calls == 3
    assert all(torch.equal(model2.state_dict()[k], w) for k, w in weights.items())
    # new settings under resume=True lift the stop: training goes on to the new plan
    _, cb3, h3 = _run(tmp_path / "run", steps=14, resume=True)
    assert h3["step"][-1] == 14 and cb3.calls == 7


def test_early_stop_at_an_epoch_end(tmp_path):
    """A stop decided at an epoch's end (no eval_every) ends the run there."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)

    def stop(state):
        state.stop = state.epoch == 1
        return {"epoch": state.epoch}

    h = fit(model, _loss, _data(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=5, callbacks=[stop],
            checkpoint_dir=tmp_path, progress=False)
    assert h["step"][-1] == 8 and [r["step"] for r in h["eval"]] == [4, 8]


def test_resume_refuses_a_model_of_another_size(tmp_path):
    _run(tmp_path / "run")
    before = (tmp_path / "run" / STATE_FILE).read_bytes()
    with pytest.raises(SettingsMismatch, match=r"model\.parameters: 4 -> 8") as e:
        _run(tmp_path / "run", width=2, resume=True)
    assert "overwrite" in str(e.value)
    assert (tmp_path / "run" / STATE_FILE).read_bytes() == before

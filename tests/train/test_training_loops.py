"""Every training loop runs on kexue.train.fit: the CoSENT fine-tune, SimBERT and diffusion training each
resume exactly (2 steps, then --resume to 4 == 4 steps straight) and record their settings, among them the
optimizer preset (kexue.optim.adamw_preset) with each loop's own deliberate numbers."""
import json

import pytest
import torch

from kexue.data import shipped as datasets
from kexue.models import build_model
from kexue.models.config import TransformerConfig
from kexue.text.tokenizer import Tokenizer, build_vocab
from kexue.train.state import load_state


def _equal_states(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _twice(train, tmp_path):
    """``train(steps, folder, **fit_options) -> (model, losses)``: 2 then 4 with resume vs 4 straight."""
    train(2, tmp_path / "split")
    with pytest.raises(ValueError, match="steps: 2 -> 4"):
        train(4, tmp_path / "split")
    m1, l1 = train(4, tmp_path / "split", resume=True)
    m2, l2 = train(4, tmp_path / "straight")
    assert l1 == l2 and len(l1) == 4
    _equal_states(m1, m2)
    return json.loads((tmp_path / "straight" / "settings.json").read_text())


def test_cosent_finetune_resumes_exactly(tmp_path):
    from kexue.similarity.finetune import finetune_cosent

    pairs = datasets.sts_en("dev")[:24]
    tok = Tokenizer(build_vocab([s for p in pairs for s in (p.a, p.b)]))
    cfg = TransformerConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=128)

    def train(steps, folder, **kw):
        torch.manual_seed(0)
        model = build_model(cfg)
        losses = finetune_cosent(model, tok, pairs, max_steps=steps, batch_size=8, progress=False, seconds=None,
                                 checkpoint_dir=folder, **kw)
        return model, losses

    settings = _twice(train, tmp_path)
    assert settings["optimizer"]["class"] == "AdamW" and settings["batch_size"] == 8 and len(settings["data"]) == 16
    # the demo's settings of the one pair trainer: a time budget may cut it anywhere, so no decay
    assert settings["optimizer_preset"] == {"optimizer": "AdamW", "lr": 2e-5, "weight_decay": 0.01,
                                            "schedule": "constant", "warmup": 10, "total_steps": 4, "clip_norm": None}
    assert settings["loss"] == "cosent" and settings["batching"] == "length" and settings["freeze_token_embeddings"]


def test_simbert_resumes_exactly(tmp_path):
    from kexue.similarity.simbert import SimBERT

    pairs = [(p.a, p.b) for p in datasets.sts_zh("train")[:200] if p.score >= 4][:12]

    def train(steps, folder, **kw):
        torch.manual_seed(0)
        sb = SimBERT.small([s for p in pairs for s in p], hidden=32, layers=1, heads=2, maxlen=24)
        hist = sb.fit(pairs, max_steps=steps, batch_size=4, progress=False, seconds=None, checkpoint_dir=folder, **kw)
        return sb.model, hist

    settings = _twice(train, tmp_path)
    assert settings["optimizer_preset"] == {"optimizer": "AdamW", "lr": 1e-3, "weight_decay": 0.01,
                                            "schedule": "constant", "warmup": 50, "total_steps": 4, "clip_norm": 1.0}


def test_diffusion_training_resumes_exactly(tmp_path):
    from kexue.diffusion import methods
    from kexue.diffusion.flow import flow_loss
    from kexue.diffusion.train import train as diffusion_train

    data = torch.rand(16, 1, 8, 8) * 2 - 1

    def train(steps, folder, **kw):
        torch.manual_seed(0)
        model = methods.build("flow", 1, 8)
        ema_model = diffusion_train(model, flow_loss, data, steps, batch_size=4, warmup=3, progress=False,
                                    checkpoint_dir=folder, **kw)
        return ema_model, load_state(folder / "state.safetensors")["history"]["loss"]

    settings = _twice(train, tmp_path)
    assert settings["ema_decay"] == 0.995 and settings["data"] is not None
    assert settings["optimizer_preset"] == {"optimizer": "AdamW", "lr": 1e-3, "weight_decay": 0.0,
                                            "schedule": "constant", "warmup": 3, "total_steps": 4, "clip_norm": 1.0}

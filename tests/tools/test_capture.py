"""kexue.tools.capture: named intermediates by forward hooks, checked against the layer's own arithmetic."""
import pytest
import torch
import torch.nn.functional as F

import kexue
from kexue.tools.capture import plot_attention
from kexue.generation import generate
from kexue.models import build_model


def _tiny(family, **extra):
    torch.manual_seed(0)
    cfg = dict(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, model_type=family, **extra)
    model = build_model(cfg).eval()
    with torch.no_grad():  # sharper attention than the 0.02 initialisation gives
        for layer in model.layers:
            layer.attn.q.weight.mul_(20), layer.attn.k.weight.mul_(20)
    return model


def _heads(x, h):
    b, l, d = x.shape
    return x.view(b, l, h, d // h).transpose(1, 2)


@pytest.mark.parametrize("family,extra", [("roformer", {}), ("gpt", {"rope": True}), ("bert", {})])
def test_probs_times_v_reproduce_attention_and_capture_changes_nothing(family, extra):
    model = _tiny(family, **extra)
    ids = torch.randint(1, 60, (2, 9))
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    ref = model(ids, attention_mask=mask)
    names = ["layers.*.attn.probs", "layers.*.attn", "layers.*.ffn.act", "layers.*", "embeddings", "layers.*.attn_norm"]
    names = [n for n in names if not (family == "gpt" and n == "embeddings")]
    with kexue.capture(model, *names) as got:
        out = model(ids, attention_mask=mask)
    assert torch.equal(out.hidden, ref.hidden) and torch.equal(out.logits if out.logits is not None else out.hidden,
                                                               ref.logits if ref.logits is not None else ref.hidden)
    for i, layer in enumerate(model.layers):
        probs = got[f"layers.{i}.attn.probs"]
        assert probs.shape == (2, 4, 9, 9)
        # the attention input: pre-norm -> the norm's output; post-norm -> the previous layer's output
        if layer.pre_norm:
            x = got[f"layers.{i}.attn_norm"]
        else:
            x = got["embeddings"] if i == 0 else got[f"layers.{i - 1}"]
        v = _heads(layer.attn.v(x), 4)
        rebuilt = layer.attn.o((probs @ v).transpose(1, 2).flatten(2))
        assert (rebuilt - got[f"layers.{i}.attn"]).abs().max() < 1e-6
        assert torch.all(probs[1, :, :, 6:] == 0)  # padded keys get no weight
        # act = act(up(x_ffn)); post-norm: the FFN sees attn_norm's output
        x_ffn = got[f"layers.{i}.attn_norm"] if not layer.pre_norm else None
        if x_ffn is not None:
            assert (got[f"layers.{i}.ffn.act"] - F.gelu(layer.ffn.up(x_ffn))).abs().max() < 1e-6
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_all_calls_during_cached_decoding():
    model = _tiny("gpt", rope=True)
    ids = torch.randint(1, 60, (1, 5))
    with kexue.capture(model, "layers.0.attn.probs", all_calls=True) as got:
        generate(model, ids, max_new_tokens=3)
    shapes = [tuple(p.shape) for p in got["layers.0.attn.probs"]]
    assert shapes[0] == (1, 4, 5, 5) and shapes[1:] == [(1, 4, 1, 6), (1, 4, 1, 7)][: len(shapes) - 1]
    assert torch.allclose(got["layers.0.attn.probs"][-1].sum(-1), torch.ones(1, 4, 1))


def test_unknown_names_are_refused():
    model = _tiny("roformer")
    with pytest.raises(ValueError, match="layers.9.attn.probs"):
        with kexue.capture(model, "layers.9.attn.probs"):
            pass
    with pytest.raises(ValueError, match="FeedForward"):
        with kexue.capture(model, "layers.0.attn.act"):
            pass


def test_plot_attention_writes_png(tmp_path):
    path = plot_attention(torch.softmax(torch.randn(4, 6, 6), -1), tmp_path / "a.png", tokens=list("abcdef"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="plot_attention"):
        plot_attention(torch.zeros(6), tmp_path / "b.png")

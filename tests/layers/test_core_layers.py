"""Masks, conditional LayerNorm, RoFormer-v2 and position encodings against closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F

from kexue.layers import LayerNorm, MultiHeadAttention, RotaryEmbedding, apply_rope_2d, hierarchical_positions, rope_2d_positions, sinusoidal, unilm_mask
from kexue.models import build_model

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _perturb_moves(model, ids, segs, pos):
    """Which output positions change when the token at ``pos`` is replaced."""
    with torch.no_grad():
        a = model(ids, segs).hidden
        ids2 = ids.clone()
        ids2[0, pos] = (ids2[0, pos] + 7) % 50
        b = model(ids2, segs).hidden
    return ((a - b).abs().amax(-1) > 1e-6)[0]


@pytest.mark.parametrize("family", ["bert", "roformer"])
def test_unilm_mask_by_perturbation(family):
    model = build_model({**TINY, "model_type": family}, application="unilm").eval()
    ids = torch.randint(1, 50, (1, 10))
    segs = torch.tensor([[0] * 4 + [1] * 6])
    # changing a target token moves only itself and later targets
    assert _perturb_moves(model, ids, segs, 6).tolist() == [False] * 6 + [True] * 4
    # changing a source token moves everything (all positions see the source)
    assert _perturb_moves(model, ids, segs, 1).all()


def test_causal_and_bidirectional_masks_by_perturbation():
    lm = build_model(TINY, application="lm").eval()
    enc = build_model(TINY, application="encoder", with_mlm=True)  # lm models always carry the head.eval()
    enc.load_state_dict(lm.state_dict())
    ids, segs = torch.randint(1, 50, (1, 8)), torch.zeros(1, 8, dtype=torch.long)
    assert _perturb_moves(lm, ids, segs, 5).tolist() == [False] * 5 + [True] * 3
    assert _perturb_moves(enc, ids, segs, 5).all()


def test_unilm_mask_closed_form():
    segs = torch.tensor([[0, 0, 1, 1, 1]])
    expect = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(unilm_mask(segs)[0, 0].long(), expect)


def test_conditional_layernorm():
    ln = LayerNorm(16, eps=1e-12, cond_dim=8)
    x = torch.randn(3, 5, 16)
    plain = F.layer_norm(x, (16,), ln.weight, ln.bias, 1e-12)
    assert torch.allclose(ln(x, torch.randn(3, 8)), plain, atol=1e-6)  # zero-initialised: plain LN at init
    assert torch.allclose(ln(x, torch.zeros(3, 8)), plain, atol=1e-6)
    with torch.no_grad():
        ln.cond_gamma.weight.normal_()
        ln.cond_beta.weight.normal_()
    assert torch.allclose(ln(x, torch.zeros(3, 8)), plain, atol=1e-6)  # zero condition: plain LN
    c = torch.randn(3, 8, requires_grad=True)
    y = ln(x, c)
    gamma = ln.weight + c @ ln.cond_gamma.weight.T
    beta = ln.bias + c @ ln.cond_beta.weight.T
    assert torch.allclose(y, F.layer_norm(x, (16,), eps=1e-12) * gamma[:, None] + beta[:, None], atol=1e-5)
    y.square().sum().backward()
    assert c.grad is not None and c.grad.abs().sum() > 0


def test_conditional_model_gradients_reach_condition():
    model = build_model(TINY, with_mlm=True, cond_dim=6)
    for name, p in model.named_parameters():
        if "cond_" in name:
            torch.nn.init.normal_(p, std=0.1)
    cond = torch.randn(2, 6, requires_grad=True)
    out = model(torch.randint(1, 50, (2, 7)), cond=cond).logits
    out.logsumexp(-1).sum().backward()
    assert cond.grad.abs().sum() > 0


def test_roformer_v2_formulas():
    """v2: no bias tensors, norms are x / sqrt(mean(x^2) + eps) without gain, tied MLM logits."""
    model = build_model({**TINY, "model_type": "roformer_v2", "hidden_act": "relu"}, with_mlm=True).eval()
    names = list(model.state_dict())
    assert not any(n.endswith("bias") for n in names), names
    assert not any("norm" in n for n in names)
    ids = torch.randint(1, 50, (2, 6))
    with torch.no_grad():
        out = model(ids)
        # recompute layer by layer from the formulas
        rms = lambda x: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-12)
        x = rms(model.embeddings.token(ids) + model.embeddings.segment(torch.zeros_like(ids)))
        rope = RotaryEmbedding(8)
        cos, sin = rope(torch.arange(6))
        for layer in model.layers:
            at = layer.attn
            q, k, v = (t(x).view(2, 6, 4, 8).transpose(1, 2) for t in (at.q, at.k, at.v))
            q, k = rope.rotate(q, cos, sin), rope.rotate(k, cos, sin)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v
            x = rms(x + at.o(a.transpose(1, 2).reshape(2, 6, 32)))
            x = rms(x + layer.ffn.down(torch.relu(layer.ffn.up(x))))
        assert torch.allclose(out.hidden, x, atol=1e-5)
        assert torch.allclose(out.logits, x @ model.embeddings.token.weight.T, atol=1e-5)


def test_rope_relative_property_and_sinusoidal_table():
    rope = RotaryEmbedding(16)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        cm, sm = rope(torch.tensor([m]))
        cn, sn = rope(torch.tensor([n]))
        return (rope.rotate(q.view(1, 1, 1, 16), cm, sm) * rope.rotate(k.view(1, 1, 1, 16), cn, sn)).sum()

    assert torch.allclose(score(3, 1), score(12, 10), atol=1e-4)
    assert torch.allclose(score(0, 0), (q * k).sum(), atol=1e-5)
    table = sinusoidal(10, 16)
    m, i = 7, 3
    assert math.isclose(table[m, i].item(), math.sin(m / 10000 ** (2 * i / 16)), abs_tol=1e-6)
    assert math.isclose(table[m, 8 + i].item(), math.cos(m / 10000 ** (2 * i / 16)), abs_tol=1e-6)


def test_rope_2d_relative_in_both_axes():
    pos = rope_2d_positions(4, 5)
    assert pos.shape == (20, 2) and pos[7].tolist() == [1, 2]
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(a, b):
        qa = apply_rope_2d(q, torch.tensor([a]))
        kb = apply_rope_2d(k, torch.tensor([b]))
        return (qa * kb).sum()

    assert torch.allclose(score((2, 3), (1, 1)), score((3, 4), (2, 2)), atol=1e-4)


def test_hierarchical_positions_closed_form():
    table = torch.randn(8, 6)
    ext = hierarchical_positions(table, 64, alpha=0.4)
    assert torch.allclose(ext[:8], table, atol=1e-6)  # original positions unchanged
    u = (table - 0.4 * table[0]) / 0.6
    assert torch.allclose(ext[3 * 8 + 5], 0.4 * u[3] + 0.6 * u[5], atol=1e-6)


def test_entropy_invariant_attention_scale():
    attn = MultiHeadAttention(16, 2, entropy_train_len=64).eval()
    x = torch.randn(1, 10, 16)
    out = attn(x)
    q, k, v = (t(x).view(1, 10, 2, 8).transpose(1, 2) for t in (attn.q, attn.k, attn.v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(8) * (math.log(10) / math.log(64))
    ref = attn.o((torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(1, 10, 16))
    assert torch.allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 8.0, 40.0])
def test_gelu_new_is_the_tanh_formula(scale):
    """``gelu_new`` is 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) written out: bit-equal to transformers'
    ``NewGELUActivation``, and a feed-forward layer with weights at growing scales stays within float32
    rounding of the formula computed in float64."""
    import math

    from transformers.activations import NewGELUActivation

    from kexue.layers import FeedForward
    from kexue.layers.ffn import gelu_tanh

    torch.manual_seed(0)
    x = torch.randn(4096) * scale
    assert torch.equal(gelu_tanh(x), NewGELUActivation()(x))
    formula = lambda t: 0.5 * t * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (t + 0.044715 * t ** 3)))  # noqa: E731
    ffn = FeedForward(32, 64, "gelu_new").eval()
    with torch.no_grad():
        for p in ffn.parameters():
            p.mul_(scale)
        pre = ffn.up(torch.randn(16, 32))  # pre-activations of growing size: |pre| up to ~10 * scale
        act = gelu_tanh(pre)
        ref = formula(pre.double())
        assert torch.equal(ffn(torch.zeros(1, 32)), ffn.down(gelu_tanh(ffn.up(torch.zeros(1, 32)))))
    assert pre.abs().max() > scale
    assert ((act.double() - ref).abs() / ref.abs().clamp(min=1.0)).max() <= 1e-6

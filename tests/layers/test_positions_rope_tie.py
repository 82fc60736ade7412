"""RoPE-Tie (《Transformer升级之路：17、多模态位置编码的简单思考》) against the post's definitions, written out here."""
import math

import pytest
import torch

from kexue.layers import RotaryEmbedding, apply_rope_2d, rope_2d_positions
from kexue.layers.rope_tie import RoPETie, patch_embeddings, rope_tie_positions
from kexue.models import build_model


def post_rotation(pos, d, base=10000.0):
    """R_{x,y} as the post writes it: a block-diagonal matrix of 2×2 rotations, pair i turning by
    (x if i is even else y)·θ_i with θ_i = base^{-2i/d} (RoFormer's adjacent-channel pairs)."""
    R = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        a = float(pos[i % 2]) * base ** (-2 * i / d)
        R[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                                                             dtype=torch.float64)
    return R


def tie_rotate(x, positions, d, interleaved=True):
    rope = RoPETie(d, interleaved=interleaved)
    cos, sin = rope(positions, dtype=torch.float64)
    return rope.rotate(x, cos, sin)


def test_positions_follow_the_post_layout():
    L, h, w, after = 3, 2, 4, 2
    got = rope_tie_positions([L, (h, w), after]).tolist()
    s, t = w + 1, h + 1  # the post's integer solution of (h+1)s = (w+1)t
    last = L - 1
    want = [[n, n] for n in range(L)]
    want += [[last + i * s, last + j * t] for i in range(1, h + 1) for j in range(1, w + 1)]
    K = last + (w + 1) * (h + 1)
    want += [[K + n, K + n] for n in range(after)]
    assert got == want
    # symmetric: text -> first patch and last patch -> text are the same 2-D step (s, t)
    first, last_patch = got[L], got[L + h * w - 1]
    assert [first[0] - last, first[1] - last] == [K - last_patch[0], K - last_patch[1]] == [s, t]


def test_score_depends_only_on_the_2d_offset():
    g = torch.Generator().manual_seed(0)
    d = 16
    for _ in range(20):
        q, k = torch.randn(1, 1, 1, d, generator=g, dtype=torch.float64), torch.randn(1, 1, 1, d, generator=g,
                                                                                     dtype=torch.float64)
        a, b, c = (torch.randint(-50, 50, (1, 1, 2), generator=g) for _ in range(3))
        score = (tie_rotate(q, a, d) * tie_rotate(k, b, d)).sum()
        shifted = (tie_rotate(q, a + c, d) * tie_rotate(k, b + c, d)).sum()
        assert torch.allclose(score, shifted, rtol=0, atol=1e-9)
        # and it is q^T R_{b-a} k with the post's matrix
        closed = q.flatten() @ post_rotation((b - a).flatten().tolist(), d) @ k.flatten()
        assert torch.allclose(score, closed, rtol=0, atol=1e-9)


def test_text_only_is_rope_1d_bit_for_bit():
    for interleaved in (True, False):
        n = torch.arange(37)[None]
        tie = RoPETie(32, interleaved=interleaved)(torch.stack([n, n], -1))
        one = RotaryEmbedding(32, interleaved=interleaved)(n)
        assert all(torch.equal(a, b) for a, b in zip(tie, one))
        tie3 = RoPETie(32, interleaved=interleaved, axes=3)(torch.stack([n, n, n], -1))  # 3-D (video) form
        assert all(torch.equal(a, b) for a, b in zip(tie3, one))


def test_image_only_is_rope_2d():
    d, h, w = 16, 3, 5
    grid = rope_2d_positions(h, w)  # (row, col)
    x = torch.randn(1, 2, h * w, d, dtype=torch.float64)
    got = tie_rotate(x, grid[None], d)
    want = torch.stack([x[0, :, m] @ post_rotation(grid[m].tolist(), d).T for m in range(h * w)], dim=1)[None]
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    # the row half uses exactly RoPE-2D's frequencies θ_{2k} = base^{-2k/(d/2)}: compare with apply_rope_2d
    even = torch.arange(d).view(-1, 2)[0::2].flatten()  # channels of the even pairs
    ref = apply_rope_2d(x[..., even].repeat(1, 1, 1, 2), grid)[..., : d // 2]
    assert torch.allclose(got[..., even], ref, rtol=0, atol=1e-6)  # apply_rope_2d forms cos/sin in fp32


def _tiny(family, **extra):
    torch.manual_seed(0)
    cfg = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, model_type=family, **extra)
    return build_model(cfg).eval()


@pytest.mark.parametrize("family,extra", [("roformer", {}), ("gpt", {"rope": True})])
def test_models_text_only_unchanged_and_2d_offsets_relative(family, extra):
    plain, tie = _tiny(family, **extra), _tiny(family, rope_tie=True, **extra)
    with torch.no_grad():  # sharpen attention so that positions visibly matter
        for layer in plain.layers:
            layer.attn.q.weight.mul_(30), layer.attn.k.weight.mul_(30)
    tie.load_state_dict(plain.state_dict())
    ids = torch.randint(1, 40, (2, 11))
    n = torch.arange(11)[None].expand(2, -1)
    assert torch.equal(plain(ids).hidden, tie(ids).hidden)
    assert torch.equal(plain(ids).hidden, tie(ids, position_ids=torch.stack([n, n], -1)).hidden)
    pos = rope_tie_positions([3, (2, 2), 4])[None].expand(2, -1, -1)
    out = tie(ids, position_ids=pos).hidden
    shifted = tie(ids, position_ids=pos + torch.tensor([7, 3])).hidden  # a different shift per axis
    assert torch.allclose(out, shifted, atol=1e-5)
    assert not torch.allclose(out, tie(ids).hidden, atol=1e-3)  # the 2-D positions do matter


def test_patch_embeddings_replace_only_marked_rows():
    model = _tiny("roformer", rope_tie=True)
    ids = torch.randint(1, 40, (1, 6))
    where = torch.tensor([[False, True, True, False, False, False]])
    vectors = torch.randn(1, 6, 32)
    with patch_embeddings(model.embeddings.token, vectors, where):
        out = model(ids, position_ids=rope_tie_positions([1, (1, 2), 3])[None]).hidden
    manual_ids = ids.clone()
    with patch_embeddings(model.embeddings.token, vectors, torch.zeros_like(where)):
        same = model(manual_ids).hidden
    assert torch.equal(same, model(ids).hidden)  # nothing marked: the model's own embeddings
    emb = model.embeddings.token(ids)
    assert torch.equal(torch.where(where[..., None], vectors, emb)[0, 1], vectors[0, 1])
    assert out.shape == (1, 6, 32) and len(model.embeddings.token._forward_hooks) == 0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="part 1"):
        rope_tie_positions([2, (0, 3)])
    with pytest.raises(ValueError, match="rope_tie"):
        RotaryEmbedding(8)(torch.zeros(1, 4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="rope_tie"):
        _tiny("bert", rope_tie=True)
    with pytest.raises(ValueError, match="rope_tie"):
        _tiny("gpt", rope_tie=True)
    with pytest.raises(ValueError, match="rope_tie"):
        _tiny("roformer", rope_tie="yes")
    with pytest.raises(ValueError, match="axes"):
        RoPETie(8, axes=2)(torch.zeros(1, 4, 3, dtype=torch.long))

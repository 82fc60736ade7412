"""GlobalPointer / Efficient GlobalPointer heads, multilabel CE, GlobalPointer KL and the CRF,
each against a direct numpy / brute-force evaluation."""
import itertools

import numpy as np
import pytest
import torch

from kexue.heads import CRF, NEG_INF, EfficientGlobalPointer, GlobalPointer, decode_spans
from kexue.losses import globalpointer_crossentropy, multilabel_categorical_crossentropy, sparse_multilabel_categorical_crossentropy
from kexue.losses import globalpointer_kl


def numpy_mlce(y, s):
    """The post's formula, written out literally: log(1+Σ_neg e^s) + log(1+Σ_pos e^-s)."""
    out = []
    for yr, sr in zip(y.reshape(-1, y.shape[-1]), s.reshape(-1, s.shape[-1])):
        neg = np.log1p(np.sum(np.exp(sr[yr == 0])))
        pos = np.log1p(np.sum(np.exp(-sr[yr == 1])))
        out.append(neg + pos)
    return np.array(out).reshape(y.shape[:-1])


def test_multilabel_ce_dense_and_sparse_match_numpy():
    rng = np.random.default_rng(0)
    s = rng.normal(scale=3, size=(4, 3, 20))
    y = (rng.random((4, 3, 20)) < 0.2).astype(np.float64)
    y[0, 0] = 0  # no positives at all
    ref = numpy_mlce(y, s)
    dense = multilabel_categorical_crossentropy(torch.tensor(y), torch.tensor(s)).numpy()
    np.testing.assert_allclose(dense, ref, atol=1e-6, rtol=0)
    k = int(y.sum(-1).max())
    idx = np.full((4, 3, k), -1)
    for a, b in itertools.product(range(4), range(3)):
        pos = np.flatnonzero(y[a, b])
        idx[a, b, : len(pos)] = pos
    sparse = sparse_multilabel_categorical_crossentropy(torch.tensor(idx), torch.tensor(s)).numpy()
    np.testing.assert_allclose(sparse, ref, atol=1e-6, rtol=0)
    # float32 agrees too, at float32 precision
    s32 = sparse_multilabel_categorical_crossentropy(torch.tensor(idx), torch.tensor(s, dtype=torch.float32))
    np.testing.assert_allclose(s32.numpy(), ref, atol=1e-4, rtol=1e-5)


def test_globalpointer_loss_ignores_masked_spans():
    torch.manual_seed(0)
    gp = GlobalPointer(16, heads=2, head_size=8)
    h = torch.randn(2, 6, 16)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    logits = gp(h, mask)
    spans = torch.tensor([[[0 * 6 + 2], [3 * 6 + 5]], [[1 * 6 + 1], [-1]]])
    loss = globalpointer_crossentropy(logits, spans)
    # dense oracle over valid spans only (masked spans are excluded from the formula)
    ref = []
    for b in range(2):
        n = int(mask[b].sum())
        for t in range(2):
            y = np.zeros((6, 6))
            for f in spans[b, t].tolist():
                if f >= 0:
                    y[f // 6, f % 6] = 1
            keep = np.triu(np.ones((6, 6), bool))
            keep[n:, :] = keep[:, n:] = False
            ref.append(numpy_mlce(y[keep][None], logits[b, t].detach().double().numpy()[keep][None])[0])
    assert abs(loss.item() - np.mean(ref)) < 1e-5


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_masked_and_lower_triangle_spans_are_neg_inf_and_never_decoded(cls):
    torch.manual_seed(0)
    head = cls(12, heads=3, head_size=8)
    h = torch.randn(2, 7, 12) * 50  # large scores everywhere
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4])
    logits = head(h, mask)
    assert logits.shape == (2, 3, 7, 7)
    lower = torch.ones(7, 7, dtype=torch.bool).tril(-1)
    assert (logits[:, :, lower] <= NEG_INF / 2).all()
    assert (logits[1, :, 3:, :] <= NEG_INF / 2).all() and (logits[1, :, :, 3:] <= NEG_INF / 2).all()
    assert (logits[0, :, ~lower] > NEG_INF / 2).all()
    for b, spans in enumerate(decode_spans(logits, threshold=-1e6)):
        n = int(mask[b].sum())
        assert all(i <= j < n for _, i, j in spans)
    assert len(decode_spans(logits, threshold=-1e6)[1]) == 3 * 6  # every valid span and no other


def test_efficient_globalpointer_structure_and_rope_relative_property():
    torch.manual_seed(0)
    d, heads, hs, L = 10, 4, 8, 9
    egp = EfficientGlobalPointer(d, heads, hs)
    gp = GlobalPointer(d, heads, hs)
    # with the per-type biases zeroed and GP's per-type projections all equal to EGP's shared one,
    # both heads score spans identically: EGP is GP with shared weights plus type biases
    with torch.no_grad():
        egp.type_bias.weight.zero_()
        egp.type_bias.bias.zero_()
        w, b = egp.dense.weight, egp.dense.bias  # rows interleaved q0 k0 q1 k1 ...
        q_w, k_w, q_b, k_b = w[0::2], w[1::2], b[0::2], b[1::2]
        gp.dense.weight.copy_(torch.cat([q_w, k_w]).repeat(heads, 1))
        gp.dense.bias.copy_(torch.cat([q_b, k_b]).repeat(heads))
    h = torch.randn(2, L, d)
    mask = torch.tensor([[1] * L, [1] * 5 + [0] * 4])
    torch.testing.assert_close(egp(h, mask), gp(h, mask), atol=1e-5, rtol=1e-5)
    # RoPE: the score of the start vector at i and end vector at j depends only on j - i.
    # Feed identical features at every position; then s(i, j) must be constant along diagonals.
    same = torch.randn(1, 1, d).expand(1, L, d)
    for head in (egp, gp):
        q, k = head.start_end(same)
        s = q @ k.transpose(-1, -2)
        for off in range(L):
            diag = torch.diagonal(s, offset=off, dim1=-2, dim2=-1)
            torch.testing.assert_close(diag, diag[..., :1].expand_as(diag), atol=1e-4, rtol=1e-5)
        # and the rotation actually does something: different offsets, different scores
        assert not torch.allclose(torch.diagonal(s, 0, -2, -1)[..., 0], torch.diagonal(s, 3, -2, -1)[..., 0])


def test_globalpointer_kl_properties():
    torch.manual_seed(0)
    s = torch.randn(3, 2, 5, 5, requires_grad=True)
    t = torch.randn(3, 2, 5, 5)
    d_st, d_ts = globalpointer_kl(s, t), globalpointer_kl(t, s)
    assert torch.allclose(d_st, d_ts)
    assert d_st.item() > 0
    assert globalpointer_kl(t, t.clone()).item() == 0
    d_st.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    # masked spans (-1e12 in both passes) contribute nothing and keep gradients finite
    gp = GlobalPointer(8, 2, 4)
    h = torch.randn(2, 5, 8, requires_grad=True)
    mask = torch.tensor([[1] * 5, [1, 1, 0, 0, 0]])
    a, b = gp(torch.nn.functional.dropout(h, 0.3), mask), gp(torch.nn.functional.dropout(h, 0.3), mask)
    kl = globalpointer_kl(a, b)
    kl.backward()
    assert torch.isfinite(kl) and torch.isfinite(h.grad).all()
    # closed form on two scalars
    x, y = torch.tensor([[1.5]]), torch.tensor([[-0.5]])
    ref = (1 / (1 + np.exp(-1.5)) - 1 / (1 + np.exp(0.5))) * 2.0
    assert abs(globalpointer_kl(x, y).item() - ref) < 1e-6


@torch.no_grad()
def _brute(crf, em, length):
    T = crf.num_tags
    scores = {}
    for path in itertools.product(range(T), repeat=length):
        s = crf.start[path[0]] + crf.end[path[-1]] + sum(em[t, path[t]] for t in range(length))
        s = s + sum(crf.transitions[path[t - 1], path[t]] for t in range(1, length))
        scores[path] = float(s)
    return scores


def test_crf_viterbi_and_likelihood_equal_brute_force():
    torch.manual_seed(0)
    T, L = 4, 5
    crf = CRF(T)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    em = torch.randn(3, L, T, dtype=torch.float32)
    lengths = [5, 3, 1]
    mask = torch.tensor([[1] * n + [0] * (L - n) for n in lengths])
    tags = torch.randint(0, T, (3, L))
    paths = crf.decode(em, mask)
    ll = crf.log_likelihood(em, tags, mask)
    for b, n in enumerate(lengths):
        scores = _brute(crf, em[b].detach(), n)
        best = max(scores, key=scores.get)
        assert tuple(paths[b]) == best
        logz = np.log(np.sum(np.exp(np.array(list(scores.values()), dtype=np.float64))))
        ref = scores[tuple(tags[b, :n].tolist())] - logz
        assert abs(ll[b].item() - ref) < 1e-4
    loss = crf(em.requires_grad_(), tags, mask)
    loss.backward()
    assert torch.isfinite(em.grad).all()


def _greedy_flat_oracle(scores: np.ndarray, threshold: float) -> set:
    """Independent flat decoding of one example's ``[H, L, L]`` scores: take the best remaining span over the
    threshold, then strike out every span overlapping it (a <= end and b >= start), until none is left."""
    s = scores.astype(np.float64).copy()
    s[s <= threshold] = -np.inf
    L = s.shape[-1]
    a, b = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    out = set()
    while np.isfinite(s).any():
        t, i, j = np.unravel_index(np.argmax(s), s.shape)
        out.add((int(t), int(i), int(j)))
        s[:, (a <= j) & (b >= i)] = -np.inf
    return out


@pytest.mark.parametrize("seed", range(5))
def test_flat_decoding_is_greedy_by_score_without_overlap(seed):
    torch.manual_seed(seed)
    head = GlobalPointer(12, heads=3, head_size=8)
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    logits = head(torch.randn(2, 9, 12) * 3, mask)
    nested, flat = decode_spans(logits, 0.0), decode_spans(logits, 0.0, flat=True)
    assert decode_spans(logits, 0.0, flat=False) == nested
    for b in range(2):
        assert flat[b] == _greedy_flat_oracle(logits[b].detach().numpy(), 0.0)
        assert flat[b] <= nested[b] and len(nested[b]) > len(flat[b]) > 0  # these scores do overlap
        kept = sorted(flat[b], key=lambda x: x[1])
        assert all(x[2] < y[1] for x, y in zip(kept, kept[1:]))  # no shared position
    # ties: earlier start first
    tie = torch.full((1, 1, 3, 3), -1.0)
    tie[0, 0, 0, 1] = tie[0, 0, 1, 2] = 5.0
    assert decode_spans(tie, 0.0, flat=True) == [{(0, 0, 1)}]

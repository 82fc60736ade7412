"""CoSENT against sentence-transformers' CoSENTLoss; SimBERT contrastive loss against a closed form; InfoNCE /
SimCSE against MultipleNegativesRankingLoss and a transcription of the post's bert4keras loss."""
import math

import numpy as np

import pytest
import torch
from sentence_transformers.sentence_transformer.losses.cosent import CoSENTLoss

from kexue.losses import (cosent_cross_encoder_loss, cosent_loss, infonce_loss, interleave, simbert_contrastive_loss,
                          simcse_loss)


def _st_loss(a, b, labels, scale=20.0):
    # compute_loss_from_embeddings needs no model; pass None for it.
    return CoSENTLoss(model=None, scale=scale).compute_loss_from_embeddings([a, b], labels)


@pytest.mark.parametrize("n,levels", [(8, 6), (32, 4), (64, 1000)])
def test_cosent_matches_sentence_transformers(n, levels):
    a, b = torch.randn(n, 16), torch.randn(n, 16)
    labels = torch.randint(0, levels, (n,)).float()  # few levels -> many ties
    ours = cosent_loss(a, b, labels)
    ref = _st_loss(a, b, labels)
    assert abs(ours.item() - ref.item()) <= 1e-6 * max(1.0, abs(ref.item()))


def test_cosent_gradient_finite_with_ties():
    a = torch.randn(6, 8, requires_grad=True)
    b = torch.randn(6, 8, requires_grad=True)
    loss = cosent_loss(a, b, torch.ones(6))  # all tied: loss = log(1) = 0
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    a.grad = None
    loss = cosent_loss(a, b, torch.tensor([0.0, 0, 1, 1, 2, 2]))
    loss.backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_cosent_cross_encoder_closed_form():
    logits = torch.tensor([0.5, -1.0, 2.0])
    labels = torch.tensor([1.0, 0.0, 2.0])
    # ordered pairs (i higher than j): (0,1), (2,0), (2,1)
    s = logits
    expect = math.log(1 + math.exp(s[1] - s[0]) + math.exp(s[0] - s[2]) + math.exp(s[1] - s[2]))
    assert abs(cosent_cross_encoder_loss(logits, labels).item() - expect) < 1e-6


def test_cosent_bad_input():
    with pytest.raises(ValueError, match="one label per score"):
        cosent_cross_encoder_loss(torch.randn(4), torch.randn(3))
    with pytest.raises(ValueError, match="paired embeddings"):
        cosent_loss(torch.randn(4, 8), torch.randn(3, 8), torch.randn(4))


def test_simbert_contrastive_closed_form():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    v = interleave(a, b)
    assert torch.equal(v[2], a[1]) and torch.equal(v[3], b[1])
    vn = torch.nn.functional.normalize(v, dim=-1)
    total = 0.0
    for i in range(6):
        logits = [30 * float(vn[i] @ vn[j]) for j in range(6) if j != i]
        partner = 30 * float(vn[i] @ vn[i ^ 1])
        total += -(partner - math.log(sum(math.exp(x) for x in logits)))
    assert abs(simbert_contrastive_loss(v).item() - total / 6) < 1e-4
    with pytest.raises(ValueError, match="even batch"):
        simbert_contrastive_loss(torch.randn(5, 4))


# -- SimCSE / InfoNCE against sentence-transformers' MultipleNegativesRankingLoss ---------------------------
def _mnrl(columns, scale=20.0):
    from sentence_transformers.sentence_transformer.losses.multiple_negatives_ranking import (
        MultipleNegativesRankingLoss)
    return MultipleNegativesRankingLoss(model=None, scale=scale).compute_loss_from_embeddings(list(columns), None)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_infonce_matches_multiple_negatives_ranking_loss(k, dtype):
    """Loss and gradients of every input, without hard negatives, with one and with three per anchor."""
    n, d = 12, 16
    a, p, negs = torch.randn(n, d, dtype=dtype), torch.randn(n, d, dtype=dtype), torch.randn(n, k, d, dtype=dtype)
    ours_in = [t.clone().requires_grad_() for t in (a, p, negs)]
    ref_in = [t.clone().requires_grad_() for t in (a, p, negs)]
    neg_arg = None if k == 0 else ours_in[2][:, 0] if k == 1 else ours_in[2]
    ours = infonce_loss(ours_in[0], ours_in[1], neg_arg, scale=20.0)
    ref = _mnrl([ref_in[0], ref_in[1]] + [ref_in[2][:, j] for j in range(k)])
    ours.backward()
    ref.backward()
    worst = abs(ours.item() - ref.item())
    for x, y in zip(ours_in[:2 + (k > 0)], ref_in):
        worst = max(worst, (x.grad - y.grad).abs().max().item())
    print(f"InfoNCE vs MultipleNegativesRankingLoss (k={k}, {dtype}): max |diff| {worst:.1e}")
    assert worst <= 1e-6
    assert ours.item() > 0.1  # not a degenerate batch


def test_simcse_forms():
    v1, v2 = torch.randn(6, 8), torch.randn(6, 8)
    # the paper's form is InfoNCE of view 1 against view 2
    assert abs(simcse_loss(v1, v2, form="paper").item() - _mnrl([v1, v2]).item()) <= 1e-6
    # the post's form: bert4keras simcse_loss on the batch x1, x1, x2, x2, ... (a NumPy transcription)
    y = interleave(v1, v2).double().numpy()
    idx = np.arange(len(y))
    y_true = (idx[None, :] == (idx + 1 - idx % 2 * 2)[:, None]).astype(float)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    sims = (y @ y.T - np.eye(len(y)) * 1e12) * 20
    logp = sims - sims.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    expect = np.mean(-(y_true * logp).sum(1))
    assert abs(simcse_loss(v1, v2).item() - expect) <= 1e-5
    with pytest.raises(ValueError, match="form"):
        simcse_loss(v1, v2, form="bert")
    with pytest.raises(ValueError, match="two views"):
        simcse_loss(v1, v2[:3])


def test_infonce_bad_input():
    a = torch.randn(4, 8)
    with pytest.raises(ValueError, match="anchors and positives"):
        infonce_loss(a, torch.randn(4, 7))
    with pytest.raises(ValueError, match="hard negatives"):
        infonce_loss(a, a, torch.randn(3, 8))
    with pytest.raises(ValueError, match="scale"):
        infonce_loss(a, a, scale=0.0)

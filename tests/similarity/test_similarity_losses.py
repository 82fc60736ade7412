"""CoSENT against sentence-transformers' CoSENTLoss; SimBERT contrastive loss against a closed form."""
import math

import pytest
import torch
from sentence_transformers.sentence_transformer.losses.cosent import CoSENTLoss

from kexue.losses import cosent_cross_encoder_loss, cosent_loss, interleave, simbert_contrastive_loss


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

"""R-Drop (kexue.losses.rdrop) against a direct torch computation of the paper's formula (F.cross_entropy and
F.kl_div both ways), gradients included; NER's GlobalPointer R-Drop is the same combination."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kexue.losses import globalpointer_crossentropy, globalpointer_kl, rdrop_combine, rdrop_loss, symmetric_kl


def reference(z1, z2, y, alpha):
    ce = 0.5 * (F.cross_entropy(z1, y) + F.cross_entropy(z2, y))
    kl12 = F.kl_div(F.log_softmax(z2, -1), F.log_softmax(z1, -1), reduction="batchmean", log_target=True)
    kl21 = F.kl_div(F.log_softmax(z1, -1), F.softmax(z2, -1), reduction="batchmean")
    return ce + alpha * (kl12 + kl21) / 2


@pytest.mark.parametrize("alpha", [0.0, 1.0, 4.0])
def test_rdrop_matches_the_formula(alpha):
    torch.manual_seed(0)
    z1 = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (7,))
    got, want = rdrop_loss(z1, z2, y, alpha), reference(z1, z2, y, alpha)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-7)
    g_got = torch.autograd.grad(got, (z1, z2))
    g_want = torch.autograd.grad(want, (z1, z2))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-7)


def test_symmetric_kl_properties():
    torch.manual_seed(1)
    z = torch.randn(4, 6)
    assert symmetric_kl(z, z + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # a shift changes no softmax
    w = torch.randn(4, 6)
    assert symmetric_kl(z, w).item() == pytest.approx(symmetric_kl(w, z).item(), rel=1e-6) and symmetric_kl(z, w) > 0
    with pytest.raises(ValueError, match="R-Drop: the two passes' logits differ in shape"):
        symmetric_kl(z, w[:, :5])
    with pytest.raises(ValueError, match="R-Drop: alpha must be >= 0"):
        rdrop_combine(z.sum(), w.sum(), z.sum(), -1.0)


def test_globalpointer_rdrop_is_the_same_combination():
    """NER's loss: ½(CE_s + CE_t) + α·D(s, t)/2, D the two KL directions of the span sigmoids summed."""
    torch.manual_seed(2)
    s, t = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)
    spans = torch.tensor([[[1 * 6 + 2], [0], [3 * 6 + 3]], [[0], [2 * 6 + 4], [0]]])
    ce_s, ce_t = globalpointer_crossentropy(s, spans), globalpointer_crossentropy(t, spans)
    p, q = torch.sigmoid(s), torch.sigmoid(t)
    kl = lambda a, b: (a * (a / b).log() + (1 - a) * ((1 - a) / (1 - b)).log())  # noqa: E731  binary KL per span
    both = (kl(p, q) + kl(q, p)).reshape(2, -1).sum(-1).mean()
    torch.testing.assert_close(globalpointer_kl(s, t), both, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rdrop_combine(ce_s, ce_t, globalpointer_kl(s, t), 2.0),
                               (ce_s + ce_t) / 2 + 2.0 * both / 2, rtol=1e-5, atol=1e-6)

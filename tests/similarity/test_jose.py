"""JoSE: the sphere constraint, tangent Riemannian gradients, the hinge objective by hand, and the
Doc2Vec-style tuples, on real Chinese sentences (sts-b-zh, jieba words)."""
import logging

import pytest
import torch
from torch.nn import functional as F

from kexue.similarity.jose import JoSE, Corpus, RiemannianSGD, nearest_words, riemannian_grad


def test_riemannian_gradient_is_tangent_and_update_stays_on_sphere():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(50, 16, dtype=torch.float64), dim=-1)
    g = torch.randn(50, 16, dtype=torch.float64)
    rg = riemannian_grad(x, g)
    assert (rg * x).sum(-1).abs().max().item() < 1e-12
    assert torch.allclose(g - rg, (g * x).sum(-1, keepdim=True) * x)  # only the radial part removed
    # the modified step: (1 + x.g/|g|) * grad, then retraction — written out by hand
    p = torch.nn.Parameter(x.clone())
    p.grad = g.clone()
    RiemannianSGD([p], lr=0.1).step()
    factor = 1 + (x * g).sum(-1, keepdim=True) / g.norm(dim=-1, keepdim=True)
    assert torch.allclose(p.detach(), F.normalize(x - 0.1 * factor * rg, dim=-1), atol=1e-12)
    assert (p.detach().norm(dim=-1) - 1).abs().max().item() < 1e-12


def test_sphere_sgd_finds_the_closed_form_maximiser():
    """max a.x on the unit sphere is x = a/|a|: plain Riemannian SGD gets there, staying on the sphere.
    JoSE's factor 1 + x.g/|g| = 1 - cos(x, a) vanishes near the optimum (step ~ angle³), so the
    modified rule closes in monotonically but slowly."""
    torch.manual_seed(0)
    a = torch.randn(8, dtype=torch.float64)
    for modified in (True, False):
        p = torch.nn.Parameter(F.normalize(torch.randn(1, 8, dtype=torch.float64), dim=-1))
        opt = RiemannianSGD([p], lr=0.1, modified=modified)
        for _ in range(300):
            opt.zero_grad()
            (-(p @ a)).sum().backward()
            opt.step()
            assert abs(p.detach().norm().item() - 1) < 1e-12
        cos = torch.dot(p.detach()[0], a / a.norm()).item()
        if modified:
            assert 0.99 < cos < 1 - 1e-6
        else:
            assert torch.allclose(p.detach()[0], a / a.norm(), atol=1e-6)


def test_sparse_and_dense_gradients_give_the_same_step():
    torch.manual_seed(0)
    a = JoSE(30, 5, 8).double()
    b = JoSE(30, 5, 8).double()
    batch = torch.stack([torch.randint(0, 30, (40,)), torch.randint(0, 30, (40,)), torch.randint(0, 5, (40,)),
                         torch.randint(0, 30, (40,))], 1)
    a.loss(batch).backward()
    for p in a.parameters():
        assert p.grad.is_sparse
    b.loss(batch).backward()
    for p in b.parameters():
        p.grad = p.grad.to_dense()
    RiemannianSGD(a.parameters(), lr=0.05).step()
    RiemannianSGD(b.parameters(), lr=0.05).step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-12)


def test_hinge_objective_by_hand():
    torch.manual_seed(0)
    m = JoSE(10, 3, 6, margin=0.3).double()
    batch = torch.tensor([[1, 2, 0, 7], [4, 4, 2, 1], [9, 0, 1, 3]])
    expect = 0.0
    for c, v, d, n in batch.tolist():
        u, vv, dd, un = m.center[c], m.context[v], m.doc[d], m.center[n]
        expect += max(0.0, 0.3 - torch.dot(u, vv).item() - torch.dot(u, dd).item() + torch.dot(un, vv).item()
                      + torch.dot(un, dd).item())
    assert m.loss(batch).item() == pytest.approx(expect, abs=1e-12)
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        m.loss(batch[:, :3])


def test_tuples_and_training_on_real_chinese_sentences_keeps_every_vector_on_the_sphere():
    import jieba
    from kexue.data.shipped import sts_zh
    from kexue.train.loop import fit

    jieba.setLogLevel(logging.WARNING)
    docs = [jieba.lcut(s) for p in sts_zh("test")[:150] for s in (p.a, p.b)]
    corpus = Corpus(docs, min_count=2)
    window = 3
    tuples = corpus.tuples(window, torch.Generator().manual_seed(0))
    expected = sum(2 * max(0, len(ids) - off) for ids in corpus.docs for off in range(1, window + 1))
    assert len(tuples) == expected
    for c, v, d, _ in tuples[:200].tolist():  # centre and context co-occur within the window in doc d
        ids = corpus.docs[d].tolist()
        assert any(ids[i] == c and v in ids[max(0, i - window): i] + ids[i + 1: i + 1 + window] for i in range(len(ids)))
    model = JoSE(len(corpus.words), len(corpus.docs), 16)
    opt = RiemannianSGD(model.parameters(), lr=0.05)
    norms = []
    fit(model, lambda m, b: m.loss(b), [tuples[i:i + 256] for i in range(0, 2048, 256)], optimizer=opt,
        epochs=2, progress=False, callbacks=[lambda s: norms.append(max((p.norm(dim=1) - 1).abs().max().item()
                                                                         for p in model.parameters()))],
        eval_every=1)
    assert len(norms) >= 16 and max(norms) < 1e-5  # on the sphere after every step
    assert nearest_words(model, corpus, corpus.words[0], 3)[0][1] <= 1.0
    with pytest.raises(ValueError, match="vocabulary"):
        nearest_words(model, corpus, "不存在的词语xyz")

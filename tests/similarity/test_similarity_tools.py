"""Whitening closed forms, CUR exactness, exact search vs brute force / faiss, Spearman vs scipy, input errors."""
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from kexue.similarity import CUR, Whitening, build_index, check_pairs, check_texts, cur_search, random_anchors, spearman
from kexue.similarity.evaluate import evaluate_pairs, rankdata
from kexue.similarity.search import faiss_available


def _anisotropic(n=500, d=12):
    return torch.randn(n, d, dtype=torch.float64) @ torch.randn(d, d, dtype=torch.float64) + 3.0


def test_whitening_full_is_zero_mean_identity_cov():
    x = _anisotropic()
    y = Whitening.fit(x, beta=1, gamma=1).transform(x)
    assert y.mean(0).abs().max() <= 1e-4
    assert (torch.cov(y.T) - torch.eye(12, dtype=y.dtype)).abs().max() <= 1e-4


def test_whitening_beta0_gamma0_keeps_cosines():
    x = _anisotropic().float()
    y = Whitening.fit(x, beta=0, gamma=0).transform(x)
    cx = F.normalize(x.double(), dim=-1)
    cy = F.normalize(y.double(), dim=-1)
    assert ((cx @ cx.T) - (cy @ cy.T)).abs().max() <= 1e-6


def test_whitening_dims_ordered_by_eigenvalue_and_roundtrip(tmp_path):
    x = _anisotropic()
    w = Whitening.fit(x, beta=1, gamma=0, k=5)
    assert torch.all(w.eigenvalues[:-1] >= w.eigenvalues[1:])
    y = w.transform(x)
    assert y.shape == (500, 5)
    var = y.var(0)  # gamma=0: variances of kept dims are the top eigenvalues, descending
    assert torch.all(var[:-1] >= var[1:])
    assert torch.allclose(var, w.eigenvalues[:5], rtol=1e-8)
    w.save(tmp_path / "w.safetensors")
    w2 = Whitening.load(tmp_path / "w.safetensors")
    assert (w2.beta, w2.gamma, w2.k) == (1, 0, 5)
    assert torch.allclose(w2.transform(x), y, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="k must be"):
        w.with_params(k=13)


def test_cur_exact_with_all_anchors():
    torch.manual_seed(0)
    n_items, n_anchor_q = 30, 40  # more anchor queries than items: R has full column rank
    M = torch.randn(n_anchor_q + 5, n_items, dtype=torch.float64)
    R, test = M[:n_anchor_q], M[n_anchor_q:]
    cur = CUR.fit(R, torch.arange(n_items))
    assert torch.allclose(cur.approximate(test), test, atol=1e-8)


def test_cur_exact_for_low_rank_scores_and_search():
    # rank-4 score matrix: 6 anchor items and 10 anchor queries already reconstruct it exactly
    q, it = torch.randn(20, 4, dtype=torch.float64), torch.randn(50, 4, dtype=torch.float64)
    M = q @ it.T
    cur = CUR.fit(M[:10], random_anchors(50, 6))
    assert torch.allclose(cur.approximate(M[10:, cur.anchor_items]), M[10:], atol=1e-8)
    row = M[15]
    top, calls = cur_search(cur, lambda idx: row[idx], k=5, budget=11)
    assert calls == 11 and set(top.tolist()) == set(row.topk(5).indices.tolist())
    with pytest.raises(ValueError, match="duplicates"):
        CUR.fit(M[:10], [1, 1, 2])


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_search_matches_brute_force(backend):
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss not installed")
    corpus, queries = torch.randn(300, 16), torch.randn(7, 16)
    scores, idx = build_index(corpus, backend=backend).search(queries, 5)
    ref = F.normalize(queries, dim=-1) @ F.normalize(corpus, dim=-1).T
    top = ref.topk(5)
    assert torch.equal(idx, top.indices)
    assert torch.allclose(scores, top.values, atol=1e-5)


def test_spearman_matches_scipy():
    for pred, gold in [(torch.randn(200), torch.randint(0, 6, (200,)).float()),
                       (torch.randint(0, 3, (50,)).float(), torch.randn(50))]:
        assert abs(spearman(pred, gold) - spearmanr(pred.numpy(), gold.numpy()).statistic) <= 1e-10
    from scipy.stats import rankdata as sp_rank
    x = torch.tensor([3.0, 1, 3, 2, 2, 2])
    assert torch.equal(rankdata(x), torch.tensor(sp_rank(x.numpy())))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="empty string"):
        check_texts(["a", " "])
    with pytest.raises(ValueError, match="duplicates"):
        check_texts(["a", "b", "a"], unique=True)
    with pytest.raises(ValueError, match="is empty"):
        check_texts([])
    with pytest.raises(TypeError, match="single string"):
        check_texts("abc")
    with pytest.raises(ValueError, match="mismatched labels"):
        check_pairs(["a", "b"], ["c", "d"], [1.0])
    with pytest.raises(ValueError, match="mismatched pairs"):
        check_pairs(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="equal lengths"):
        spearman([1, 2, 3], [1, 2])


def test_evaluate_pairs_on_real_sts():
    from kexue.data import shipped as datasets

    pairs = datasets.sts_en("dev")[:200]
    # A bag-of-characters encoder: crude but deterministic; it must correlate positively.
    def encode(texts):
        v = torch.zeros(len(texts), 128)
        for i, t in enumerate(texts):
            for ch in t.lower():
                v[i, ord(ch) % 128] += 1
        return v
    rho = evaluate_pairs(encode, pairs)
    assert 0.0 < rho < 1.0


@pytest.mark.parametrize("beta,gamma,k", [(0.0, 0.0, 4), (0.5, 0.5, 6), (0.0, 1.0, 12), (1.0, 0.5, 3)])
def test_whitening_beta_centres_the_covariance_as_the_post_writes(beta, gamma, k):
    """《当BERT-whitening引入超参数》: Σ = (1/N) Σᵢ (xᵢ − βμ)ᵀ(xᵢ − βμ) = UΛUᵀ, x̃ = (x − βμ)UΛ^(−γ/2), first k,
    written out with numpy; ours uses N − 1, which scales Λ by N/(N − 1) and x̃ by its power −γ/2."""
    import numpy as np

    x = _anisotropic()
    n = x.shape[0]
    xn = x.numpy()
    xc = xn - beta * xn.mean(0)
    u, s, _ = np.linalg.svd(xc.T @ xc / n)
    ref = torch.from_numpy((xc @ u @ np.diag(s ** (-gamma / 2)))[:, :k])
    base = Whitening.fit(x)  # one fit; (β, γ, k) chosen afterwards, as a grid search does
    got = base.with_params(beta, gamma, k).transform(x)
    got = got * (n / (n - 1)) ** (gamma / 2)
    signs = torch.sign((got * ref).sum(0))  # eigenvectors are defined up to sign
    assert (got * signs - ref).abs().max() <= 1e-8 * ref.abs().max()
    assert torch.allclose(Whitening.fit(x, beta, gamma, k).transform(x), base.with_params(beta, gamma, k)(x))

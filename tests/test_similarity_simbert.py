"""SimBERT objective on a tiny model: [CLS] sees only the source, losses finite, sampling and re-ranking."""
import pytest
import torch

from kexue import datasets
from kexue.similarity.simbert import SimBERT, pair_auc


@pytest.fixture(scope="module")
def tiny():
    pairs = [(p.a, p.b) for p in datasets.sts_zh("train")[:200] if p.score >= 4][:16]
    sb = SimBERT.small([s for p in pairs for s in p], hidden=32, layers=2, heads=2, maxlen=32)
    return sb, pairs


def test_cls_sees_only_the_source(tiny):
    sb, pairs = tiny
    sb.model.eval()
    batch = sb.batch(pairs[:3])
    with torch.no_grad():
        out = sb.model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
    # sample 2k is (a_k -> b_k): its pooled [CLS] must equal encode(a_k) exactly (UniLM prefix mask).
    enc = sb.encode([a for a, _ in pairs[:3]])
    cls = torch.nn.functional.normalize(out.pooled[0::2], dim=-1)
    assert torch.allclose(cls, enc, atol=1e-5)


def test_fit_and_generate(tiny):
    sb, pairs = tiny
    hist = sb.fit(pairs, max_steps=3, batch_size=8, progress=False)
    assert len(hist) == 3 and all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in hist)
    cands = sb.sample(pairs[0][0], n=3, topk=5, max_new=6, seed=0)
    assert len(cands) == 3 and all(isinstance(c, str) for c in cands)
    ranked = sb.generate_similar(pairs[0][0], n=4, topp=0.9, seed=0)
    sims = [s for _, s in ranked]
    assert sims == sorted(sims, reverse=True)
    assert 0.0 <= pair_auc(sb, pairs) <= 1.0


def test_bad_input(tiny):
    sb, _ = tiny
    with pytest.raises(ValueError, match="empty string"):
        sb.encode(["好", ""])
    with pytest.raises(ValueError, match=r"pairs\[1\] is not an \(a, b\) pair"):
        pair_auc(sb, [("a", "b"), ("c",)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty string"):
        sb.fit([("a", "b"), ("c", " ")], max_steps=1)

"""SBERT softmax and cosine-regression losses against sentence-transformers' own SoftmaxLoss and
CosineSimilarityLoss on the same embeddings; pair files in both layouts; Spearman against scipy."""
import json

import pytest
import scipy.stats
import torch
from sentence_transformers.sentence_transformer.losses.cosine_similarity import CosineSimilarityLoss
from sentence_transformers.sentence_transformer.losses.softmax import SoftmaxLoss
from torch import nn

from kexue.losses import SBERTClassifier, cosent_loss, cosine_mse_loss, sbert_softmax_loss
from kexue.similarity.evaluate import spearman
from kexue.data.pairs import PairFileError, read_pairs, sim_zh


class _Given(nn.Module):
    """Stands in for a SentenceTransformer: returns the embedding it is handed."""
    device = torch.device("cpu")

    def forward(self, features):
        return {"sentence_embedding": features["emb"]}


@pytest.mark.parametrize("n,d,k,mul", [(8, 16, 2, False), (33, 24, 3, False), (16, 8, 6, True)])
def test_sbert_softmax_equals_sentence_transformers(n, d, k, mul):
    u, v = torch.randn(n, d), torch.randn(n, d)
    labels = torch.randint(0, k, (n,))
    ref = SoftmaxLoss(_Given(), d, k, concatenation_sent_multiplication=mul)
    ours = SBERTClassifier(d, k, concat_mul=mul)
    ours.dense.load_state_dict(ref.classifier.state_dict())
    expect = ref([{"emb": u}, {"emb": v}], labels)
    got = sbert_softmax_loss(u, v, labels, ours)
    assert abs(got.item() - expect.item()) <= 1e-6


@pytest.mark.parametrize("n", [5, 64])
def test_cosine_mse_equals_sentence_transformers(n):
    u, v = torch.randn(n, 12), torch.randn(n, 12)
    labels = torch.rand(n)
    expect = CosineSimilarityLoss(_Given())([{"emb": u}, {"emb": v}], labels)
    assert abs(cosine_mse_loss(u, v, labels).item() - expect.item()) <= 1e-6


def test_losses_train_the_vectors():
    u = torch.randn(16, 8, requires_grad=True)
    v = torch.randn(16, 8)
    y = torch.randint(0, 2, (16,))
    clf = SBERTClassifier(8, 2)
    for loss in (sbert_softmax_loss(u, v, y, clf), cosine_mse_loss(u, v, y.float()), cosent_loss(u, v, y.float())):
        u.grad = None
        loss.backward()
        assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


def test_loss_bad_input():
    clf = SBERTClassifier(4, 2)
    with pytest.raises(ValueError, match="one label per pair"):
        cosine_mse_loss(torch.randn(3, 4), torch.randn(3, 4), torch.rand(2))
    with pytest.raises(ValueError, match="one shape"):
        sbert_softmax_loss(torch.randn(3, 4), torch.randn(3, 5), torch.zeros(3), clf)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        sbert_softmax_loss(torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 2]), clf)
    with pytest.raises(ValueError, match="integer class labels"):
        sbert_softmax_loss(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0.5, 1.0]), clf)
    with pytest.raises(ValueError, match="num_labels >= 2"):
        SBERTClassifier(4, 1)


def _real_pairs(shared_dir, n=40):
    lines = (shared_dir / "data/sts-b-zh/valid.tsv").read_text(encoding="utf-8").splitlines()[:n]
    return [line.split("\t") for line in lines]


def test_read_pairs_both_layouts_agree(shared_dir, tmp_path):
    rows = _real_pairs(shared_dir)
    tsv = tmp_path / "p.tsv"
    tsv.write_text("\n".join("\t".join(r) for r in rows) + "\n", encoding="utf-8")
    jl = tmp_path / "p.jsonl"
    jl.write_text("\n".join(json.dumps({"sentence1": a, "sentence2": b, "label": int(y)}, ensure_ascii=False)
                            for a, b, y in rows), encoding="utf-8")
    a, b = read_pairs(tsv), read_pairs(jl)
    assert a == b and len(a) == len(rows)
    assert [p.score for p in a] == [float(r[2]) for r in rows]


@pytest.mark.parametrize("line,msg", [
    ("只有一列", "expected 3 tab-separated columns"),
    ("甲\t乙\t很好", "is not a number"),
    ("甲\t\t1", "sentence2 is empty"),
    ("甲\t乙\tnan", "not finite"),
])
def test_read_pairs_names_the_bad_line(tmp_path, line, msg):
    f = tmp_path / "bad.tsv"
    f.write_text("今天天气好\t天气不错\t1\n" + line + "\n", encoding="utf-8")
    with pytest.raises(PairFileError, match=f"bad.tsv:2: .*{msg}"):
        read_pairs(f)


def test_read_pairs_bad_json(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"sentence1": "a", "sentence2": "b", "label": 1}\n{"sentence1": "a", "label": 1}\n')
    with pytest.raises(PairFileError, match="bad.jsonl:2: missing key.*sentence2"):
        read_pairs(f)


def test_sim_zh_split_is_seeded_and_disjoint():
    train, dev = sim_zh("PAWSX", "train"), sim_zh("PAWSX", "dev")
    assert len(train) + len(dev) == 2000 and abs(len(dev) - 400) <= 1
    assert sim_zh("PAWSX", "dev") == dev
    assert {p.score for p in train} == {0.0, 1.0}
    with pytest.raises(ValueError, match="unknown sim-zh set"):
        sim_zh("XNLI", "train")


def test_spearman_equals_scipy_on_both_formats(shared_dir, tmp_path):
    rows = _real_pairs(shared_dir, 200)
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(len(rows), generator=g)
    for layout in ("tsv", "jsonl"):
        f = tmp_path / f"p.{layout}"
        if layout == "tsv":
            f.write_text("\n".join("\t".join(r) for r in rows), encoding="utf-8")
        else:
            f.write_text("\n".join(json.dumps({"sentence1": a, "sentence2": b, "label": y}) for a, b, y in rows))
        gold = [p.score for p in read_pairs(f)]
        expect = scipy.stats.spearmanr(scores.numpy(), gold).statistic
        assert abs(spearman(scores, gold) - expect) <= 1e-9

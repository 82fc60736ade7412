"""The persistent search index: search over a saved index equals brute-force search with the same encoder
(torch and faiss backends), `kexue search INDEX` embeds only the queries (model calls counted on a 5k
corpus of real STS-B-zh sentences), `index add` equals a build over the union, and a changed encoder or a
damaged index folder is refused naming the file."""
from __future__ import annotations

import json

import pytest
import torch

from kexue.cli import main as cli
from kexue.data.shipped import sts_zh
from kexue.models import build_model
from kexue.models.checkpoints import save_pretrained
from kexue.models.pretrained import zh_mini_path
from kexue.recipes.encoder import EncoderPredictor
from kexue.recipes.predictor import load
from kexue.similarity.index import SearchIndex
from kexue.text.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A small random BERT on kexue-zh-mini's real vocabulary, saved as an encoder folder."""
    torch.manual_seed(0)
    tok = Tokenizer.from_pretrained(zh_mini_path())
    model = build_model(dict(model_type="bert", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    folder = tmp_path_factory.mktemp("enc")
    save_pretrained(model, folder, tok)
    return folder


@pytest.fixture(scope="module")
def corpus():
    seen, out = set(), []
    for p in sts_zh("train"):
        for s in (p.a, p.b):
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out[:5000]


def test_index_equals_brute_force(encoder, corpus, tmp_path):
    pred = load(encoder)
    part = corpus[:400]
    queries = [p.a for p in sts_zh("valid")[:16]]
    brute = pred.search(queries, part, 5)
    for backend in ("torch", "faiss"):
        index = SearchIndex.build(tmp_path / backend, part, pred.embed, encoder, backend=backend)
        got = SearchIndex.open(tmp_path / backend).search(pred.embed(queries), 5)
        for b, g in zip(brute, got):
            assert [r["text"] for r in b["results"]] == [r["text"] for r in g]
            assert [r["line"] for r in b["results"]] == [r["line"] for r in g]
            assert max(abs(x["score"] - y["score"]) for x, y in zip(b["results"], g)) < 1e-5
        assert len(index) == len(part)


def test_second_search_embeds_only_the_queries(encoder, corpus, tmp_path, monkeypatch, capsys):
    calls = []
    real = EncoderPredictor.embed
    monkeypatch.setattr(EncoderPredictor, "embed", lambda self, texts: calls.append(len(texts)) or real(self, texts))
    (tmp_path / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    assert cli(["index", "build", str(encoder), "--corpus", str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "ix")]) == 0
    assert calls == [len(corpus)] and len(corpus) == 5000
    calls.clear()
    capsys.readouterr()
    assert cli(["search", str(tmp_path / "ix"), "一架飞机正在起飞。", "一个人在吹长笛。", "--top-k", "3"]) == 0
    assert calls == [2], "the corpus was embedded again"
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["query"] for r in rows] == ["一架飞机正在起飞。", "一个人在吹长笛。"]
    assert all(len(r["results"]) == 3 and r["results"][0]["score"] >= r["results"][1]["score"] for r in rows)


def test_add_equals_a_build_over_the_union(encoder, corpus, tmp_path):
    pred = load(encoder)
    a, b = corpus[:200], corpus[200:300]
    index = SearchIndex.build(tmp_path / "inc", a, pred.embed, encoder)
    index.add(b, pred.embed, [{"line": 201 + i} for i in range(len(b))])
    full = SearchIndex.build(tmp_path / "full", a + b, pred.embed, encoder)
    reopened = SearchIndex.open(tmp_path / "inc")
    assert torch.allclose(reopened.vectors, full.vectors, atol=1e-6) and reopened.rows == full.rows
    q = pred.embed(corpus[400:405])
    assert [[r["text"] for r in row] for row in reopened.search(q, 4)] == \
           [[r["text"] for r in row] for row in full.search(q, 4)]


def test_refusals(encoder, corpus, tmp_path):
    pred = load(encoder)
    SearchIndex.build(tmp_path / "ix", corpus[:50], pred.embed, encoder)
    with pytest.raises(ValueError, match="already holds an index"):
        SearchIndex.build(tmp_path / "ix", corpus[:50], pred.embed, encoder)
    bad = tmp_path / "ix" / "texts.jsonl"
    lines = bad.read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join(lines[:3] + ["not json"] + lines[4:]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"texts.jsonl:4"):
        SearchIndex.open(tmp_path / "ix")
    SearchIndex.build(tmp_path / "ix2", corpus[:50], pred.embed, encoder)
    (tmp_path / "ix2" / "texts.jsonl").write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="says 50"):
        SearchIndex.open(tmp_path / "ix2")
    changed = tmp_path / "enc2"
    changed.mkdir()
    for f in encoder.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    index = SearchIndex.build(tmp_path / "ix3", corpus[:50], pred.embed, changed)
    model = build_model(checkpoint=changed)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_pretrained(model, changed, Tokenizer.from_pretrained(changed))
    with pytest.raises(ValueError, match="not the one the index was built with"):
        index.check_encoder()
    assert cli(["search", str(tmp_path / "ix3"), "飞机"]) == 2


def test_an_onnx_export_keeps_the_index_a_changed_setting_does_not(tmp_path, corpus):
    """``kexue export onnx`` writes into the encoder folder (its graphs join the folder's manifest) without
    changing a vector: the index stays valid. A changed post-processing setting in the manifest (normalisation
    removed) changes the vectors: the index is refused."""
    from kexue.recipes.folder import save_encoder
    from kexue.tools.onnx_export import available

    torch.manual_seed(0)
    tok = Tokenizer.from_pretrained(zh_mini_path())
    model = build_model(dict(model_type="bert", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    enc = save_encoder(tmp_path / "enc", model.eval(), tok)
    index = SearchIndex.build(tmp_path / "ix", corpus[:40], load(enc).embed, enc)
    if available() is None:
        before = (enc / "manifest.json").read_text(encoding="utf-8")
        assert cli(["export", "onnx", str(enc), "--threads", "1"]) == 0
        assert (enc / "manifest.json").read_text(encoding="utf-8") != before  # the graphs joined the unit
        assert index.check_encoder() == enc
        assert cli(["search", str(tmp_path / "ix"), "飞机"]) == 0
    manifest = json.loads((enc / "manifest.json").read_text(encoding="utf-8"))
    manifest["post_processing"] = {}
    (enc / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match="not the one the index was built with"):
        index.check_encoder()

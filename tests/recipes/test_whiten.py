"""``kexue whiten``: BERT-whitening fitted on a corpus and stored in the encoder folder; embed, search and
index use it. Oracle: Whitening.fit / transform applied by hand to the raw vectors (and sentence-transformers
reading the folder's Dense module)."""
import json

import pytest
import torch

import kexue
from kexue.cli import dispatch
from kexue.data import shipped as datasets
from kexue.models.pretrained import minilm
from kexue.recipes.folder import save_encoder
from kexue.similarity.whitening import Whitening


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whiten")
    pairs = datasets.sts_en("train")[:40]
    corpus = [p.a for p in pairs] + [p.b for p in pairs]
    (tmp / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    model, tok = minilm()
    enc = save_encoder(tmp / "enc", model, tok)
    return tmp, enc, corpus


def test_whiten_equals_hand_whitening_and_search_uses_it(setup, capsys):
    tmp, enc, corpus = setup
    queries = [p.a for p in datasets.sts_en("test")[:3]]
    raw_fit, raw_q = kexue.load(enc).embed(corpus), kexue.load(enc).embed(queries)
    assert dispatch(["index", "build", str(enc), "--corpus", str(tmp / "corpus.txt"), "--out", str(tmp / "old")]) == 0
    assert dispatch(["whiten", str(enc), "--corpus", str(tmp / "corpus.txt"), "--beta", "0.5", "--gamma", "0.8",
                     "--k", "64"]) == 0
    hand = Whitening.fit(raw_fit, 0.5, 0.8, 64)
    predictor = kexue.load(enc)
    got = predictor.embed(queries)
    assert got.shape == (3, 64) and torch.allclose(got, hand.transform(raw_q), atol=1e-6)
    manifest = json.loads((enc / "manifest.json").read_text())
    assert manifest["post_processing"]["whitening"] == {"file": "whitening.safetensors", "beta": 0.5, "gamma": 0.8,
                                                        "k": 64, "dim": 384}
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(enc), device="cpu").encode(queries, convert_to_tensor=True)
    assert torch.allclose(ref.float(), got, atol=1e-5)  # the Dense module is the same affine map (in fp32)
    capsys.readouterr()
    assert dispatch(["embed", str(enc), queries[0]]) == 0
    assert torch.allclose(torch.tensor(json.loads(capsys.readouterr().out)["embedding"]), got[0], atol=1e-6)
    # re-running fits on the raw vectors again (not on the whitened ones)
    assert dispatch(["whiten", str(enc), "--corpus", str(tmp / "corpus.txt")]) == 0
    assert torch.allclose(kexue.load(enc).embed(queries), Whitening.fit(raw_fit).transform(raw_q), atol=1e-5)
    white = kexue.load(enc).embed(corpus)
    # search over a corpus: cosine of whitened vectors
    capsys.readouterr()
    assert dispatch(["search", str(enc), "--corpus", str(tmp / "corpus.txt"), "--top-k", "3", queries[0]]) == 0
    hit = json.loads(capsys.readouterr().out)["results"]
    cos = torch.nn.functional.normalize(white, dim=-1) @ torch.nn.functional.normalize(
        kexue.load(enc).embed(queries[:1]), dim=-1)[0]
    assert [r["line"] - 1 for r in hit] == cos.topk(3).indices.tolist()
    assert [r["score"] for r in hit] == pytest.approx(cos.topk(3).values.tolist(), abs=1e-5)
    # an index built after whitening holds whitened vectors; the one built before is refused
    assert dispatch(["index", "build", str(enc), "--corpus", str(tmp / "corpus.txt"), "--out", str(tmp / "new")]) == 0
    from kexue.similarity.index import SearchIndex

    index = SearchIndex.open(tmp / "new")
    assert torch.allclose(index.vectors, torch.nn.functional.normalize(white, dim=-1), atol=1e-5)
    with pytest.raises(ValueError, match="not the one the index was built with"):
        dispatch(["search", str(tmp / "old"), queries[0]])


def test_whiten_bad_k(setup, capsys):
    tmp, enc, _ = setup
    from kexue.cli import main

    assert main(["whiten", str(enc), "--corpus", str(tmp / "corpus.txt"), "--k", "999"]) == 2
    assert "--k 999" in capsys.readouterr().err

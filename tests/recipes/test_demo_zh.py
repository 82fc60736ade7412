"""The Chinese half of ``kexue demo`` on a tiny budget: metrics layout, the saved encoder reproduces the demo's
own vectors, ``kexue search`` runs on it, and a run without gain fails loudly."""
import json

import pytest
import torch

from kexue.data import shipped as datasets
from kexue.cli import main as cli
from kexue.recipes.demo import build_parser
from kexue.recipes.demo import main as demo_main
from kexue.recipes import demo_zh
from kexue.models import build_model
from kexue.models.pretrained import embed
from kexue.similarity.evaluate import evaluate_pairs
from kexue.text.tokenizer import Tokenizer

TINY = ["--zh-steps", "3", "--zh-batch-size", "8", "--zh-train-pairs", "48", "--zh-dev-pairs", "120",
        "--zh-test-pairs", "150", "--zh-show", "2", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    """As the demo runs (``--threads 1``): on a small shared CPU more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_search_split_keeps_each_partner_and_drops_the_queries():
    pairs = datasets.sts_zh("test")[:300]
    queries, corpus = demo_zh.search_split(pairs)
    assert queries and len({a for a, _ in queries}) == len(queries)
    in_corpus = set(corpus)
    assert all(a not in in_corpus and b in in_corpus for a, b in queries)
    assert in_corpus == {s for p in pairs for s in (p.a, p.b)} - {a for a, _ in queries}
    paraphrases = {(p.a, p.b) for p in pairs if p.score >= 4}
    assert all(q in paraphrases for q in queries)


def test_chinese_half_saves_an_encoder_that_reproduces_its_vectors(tmp_path, capsys):
    args = build_parser().parse_args(["--out", str(tmp_path)] + TINY)
    metrics, encoder, tok = demo_zh.run(args, tmp_path, progress=False)
    assert metrics["train"]["steps"] == 3 and metrics["train_pairs"] == 48 and metrics["dev_pairs"] == 120
    for stage in ("zero_shot", "finetuned"):
        assert set(metrics[stage]) == {"spearman", "recall@1", "recall@3"}
        assert 0 <= metrics[stage]["recall@1"] <= metrics[stage]["recall@3"] <= 1
    json.dumps(metrics)  # JSON-ready as written into metrics.json

    # The folder reloads through build_model and gives the in-memory fine-tuned encoder's vectors.
    folder = tmp_path / "encoder-zh"
    reloaded = build_model(checkpoint=folder).eval()
    tok2 = Tokenizer.from_pretrained(folder)
    texts = [p.a for p in datasets.sts_zh("test")[:16]]
    mine = embed(encoder, tok, texts, maxlen=demo_zh.MAXLEN)
    assert (embed(reloaded, tok2, texts, maxlen=demo_zh.MAXLEN) - mine).abs().max() <= 1e-6
    dev = datasets.sts_zh("valid")[:120]
    rho = evaluate_pairs(lambda t: embed(reloaded, tok2, t, maxlen=demo_zh.MAXLEN), dev)
    assert abs(rho - metrics["finetuned"]["spearman"]) <= 1e-6

    # `kexue search` on the saved folder and corpus file ranks like the demo's printed examples.
    corpus = (tmp_path / "corpus-zh.txt").read_text(encoding="utf-8").splitlines()
    assert len(corpus) == metrics["search"]["corpus"]
    example = metrics["search"]["examples"][0]
    capsys.readouterr()
    assert cli(["search", str(folder), "--corpus", str(tmp_path / "corpus-zh.txt"), "--top-k", "3",
                example["query"]]) == 0
    got = json.loads(capsys.readouterr().out.splitlines()[0])["results"]
    assert [r["text"] for r in got] == [r["text"] for r in example["results"]]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(got, example["results"])) <= 1e-6


def test_demo_only_zh_merges_its_section_and_fails_loudly_without_gain(tmp_path, capsys, monkeypatch):
    (tmp_path / "metrics.json").write_text(json.dumps({"zero_shot_spearman": 0.5, "kept": True}))
    # A seeded tiny run whose Spearman rises (checked below, not assumed).
    assert demo_main(["--only", "zh", "--out", str(tmp_path), "--zh-lr", "5e-4"] + TINY) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["kept"] is True and metrics["zero_shot_spearman"] == 0.5  # the English part is left alone
    zh = metrics["zh"]
    assert zh["finetuned"]["spearman"] > zh["zero_shot"]["spearman"]
    out = capsys.readouterr().out
    assert demo_zh.summary_line(zh) in out and "query: " + zh["search"]["examples"][0]["query"] in out

    # No gain: the metrics are still written, then the demo exits with the reason.
    flat = {**zh, "finetuned": {**zh["finetuned"], "spearman": zh["zero_shot"]["spearman"]}}
    monkeypatch.setattr(demo_zh, "run", lambda *a, **k: (flat, None, None))
    with pytest.raises(SystemExit, match="zh .*did not improve Spearman"):
        demo_main(["--only", "zh", "--out", str(tmp_path)] + TINY)
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["zh"] == flat
    (tmp_path / "metrics.json").write_text("not json")
    with pytest.raises(ValueError, match="metrics.json is not a JSON object"):
        demo_main(["--only", "zh", "--out", str(tmp_path)] + TINY)
    assert (tmp_path / "metrics.json").read_text() == "not json"

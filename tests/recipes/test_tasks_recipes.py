"""Every task recipe end-to-end on a tiny slice of its real data (seconds each), plus the metric helpers."""
import json

import pytest
import torch

from kexue.cli import COMMANDS, main as cli
from kexue.recipes.metrics import answer_em, answer_f1, bio_to_spans, span_prf


def test_bio_to_spans_and_span_prf():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-ORG", "O", "I-PER"]
    assert bio_to_spans(tags) == {("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5), ("ORG", 6, 6), ("PER", 8, 8)}
    s = span_prf([{1, 2, 3}, set()], [{2, 3}, {4, 5}])
    assert (s["precision"], s["recall"]) == (2 / 3, 2 / 4) and abs(s["f1"] - 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5)) < 1e-12
    assert answer_em("南宋", "南宋") == 1 and answer_f1("南宋朝", "南宋") == pytest.approx(0.8)
    assert answer_f1("", "") == 1 and answer_f1("北魏", "南宋") == 0


def run(tmp_path, name, *args):
    torch.set_num_threads(1)
    assert name in COMMANDS
    assert cli([name, "--out", str(tmp_path), "--no-progress", *args]) == 0
    return json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("head", ["globalpointer", "efficient", "crf"])
def test_ner_recipe(tmp_path, head):
    extra = ["--rdrop", "1.0"] if head == "efficient" else []
    m = run(tmp_path, "ner", "--head", head, "--limit", "24", "--epochs", "1", "--maxlen", "48", *extra)
    assert m["n_gold"] > 0 and 0 <= m["f1"] <= 1 and len(m["loss"]) == 1
    assert (tmp_path / "vocab.txt").exists()


def test_classify_recipe(tmp_path):
    m = run(tmp_path, "classify", "--limit", "24", "--epochs", "1", "--maxlen", "48")
    assert set(m["labels"]) <= {"唐", "宋"} and 0 <= m["accuracy"] <= 1


def test_classify_recipe_user_tsv(tmp_path):
    tsv = tmp_path / "data.tsv"
    tsv.write_text("".join(f"{t}\t{lab}\n" for t, lab in [("好极了", "pos"), ("糟透了", "neg")] * 6), encoding="utf-8")
    tmp_path = tmp_path / "out"
    m = run(tmp_path, "classify", "--train", str(tsv), "--epochs", "1")
    assert m["labels"] == ["neg", "pos"] and m["n_eval"] >= 2


def test_reading_recipe(tmp_path):
    m = run(tmp_path, "reading", "--limit", "2", "--epochs", "1", "--maxlen", "64", "--max-answer", "4")
    assert m["n_eval_questions"] == 2 and 0 <= m["f1"] <= 1 and len(m["predictions"]) == 2


def test_poem_recipe(tmp_path):
    m = run(tmp_path, "poem", "--limit", "16", "--epochs", "1", "--maxlen", "40", "--samples", "1")
    assert m["eval_perplexity"] > 1 and set(m["samples"]) == set(m["labels"])


def test_dialogue_recipe(tmp_path):
    m = run(tmp_path, "dialogue", "--limit", "16", "--epochs", "1", "--maxlen", "48")
    assert m["eval_response_perplexity"] > 1 and all("reply" in e for e in m["examples"])


def test_recipe_fine_tunes_a_pretrained_checkpoint(tmp_path):
    """--checkpoint loads HF-layout weights + vocab.txt (the embedded all-MiniLM-L6-v2) instead of a fresh model."""
    from kexue.models.pretrained import minilm_path

    tsv = tmp_path / "data.tsv"
    tsv.write_text("".join(f"{t}\t{lab}\n" for t, lab in [("what a great film", "pos"), ("awful, boring plot", "neg")] * 5),
                   encoding="utf-8")
    tmp_path = tmp_path / "out"
    m = run(tmp_path, "classify", "--train", str(tsv), "--epochs", "1", "--lr", "2e-5", "--checkpoint", str(minilm_path()))
    assert m["checkpoint"]
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8") == (minilm_path() / "vocab.txt").read_text(encoding="utf-8")


def test_poem_and_dialogue_recipes_read_user_files(tmp_path):
    """--train/--dev in the documented plain-text formats, written from the real fortunes-zh data."""
    from kexue.data import shipped as datasets
    from kexue.recipes.dialogue import fortunes_dialogues

    poems = [("唐", p.text) for p in datasets.poems("tang300")[:12]] + [("宋", p.text) for p in datasets.poems("song100")[:6]]
    (tmp_path / "poems.txt").write_text("".join(f"{c}\t{t.replace(chr(10), '')}\n" for c, t in poems), encoding="utf-8")
    m = run(tmp_path / "poem", "poem", "--train", str(tmp_path / "poems.txt"), "--epochs", "1", "--maxlen", "40",
            "--samples", "1")
    assert m["labels"] == ["唐", "宋"] and m["n_train"] + m["n_eval"] == len(poems)
    dialogues = fortunes_dialogues()[:14]
    text = "\n".join("\n".join(d) + "\n" for d in dialogues)
    (tmp_path / "chats.txt").write_text(text, encoding="utf-8")
    (tmp_path / "dev.txt").write_text("\n".join("\n".join(d) + "\n" for d in fortunes_dialogues()[14:17]), encoding="utf-8")
    m = run(tmp_path / "dialogue", "dialogue", "--train", str(tmp_path / "chats.txt"), "--dev", str(tmp_path / "dev.txt"),
            "--epochs", "1", "--maxlen", "48")
    assert (m["n_train"], m["n_eval"]) == (14, 3)

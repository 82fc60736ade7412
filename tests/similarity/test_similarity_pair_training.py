"""kexue similarity (CoSENT / SBERT / cosine) on a slice of real LCQMC pairs: the saved encoder reproduces
the run's dev Spearman through kexue.load and kexue evaluate --pairs, which equals scipy's."""
import json

import pytest
import scipy.stats

import kexue
from kexue.cli import main as cli
from kexue.data.pairs import read_pairs, sim_zh


@pytest.fixture(scope="module")
def split_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    train, dev = sim_zh("LCQMC", "train")[:96], sim_zh("LCQMC", "dev")[:48]
    (d / "train.tsv").write_text("".join(f"{p.a}\t{p.b}\t{int(p.score)}\n" for p in train), encoding="utf-8")
    (d / "dev.jsonl").write_text("".join(json.dumps({"sentence1": p.a, "sentence2": p.b, "label": int(p.score)},
                                                    ensure_ascii=False) + "\n" for p in dev), encoding="utf-8")
    return d


@pytest.mark.parametrize("loss", ["cosent", "sbert", "cosine"])
def test_similarity_trains_saves_and_reproduces(split_files, tmp_path, loss, capsys):
    out = tmp_path / loss
    rc = cli(["similarity", "--train", str(split_files / "train.tsv"), "--dev", str(split_files / "dev.jsonl"),
              "--loss", loss, "--steps", "4", "--batch-size", "24", "--out", str(out), "--no-progress"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["loss_function"] == loss
    dev = read_pairs(split_files / "dev.jsonl")
    sims = [r["similarity"] for r in kexue.load(out).predict([[p.a, p.b] for p in dev])]
    expect = scipy.stats.spearmanr(sims, [p.score for p in dev]).statistic
    assert abs(metrics["dev_spearman"] - expect) <= 1e-6
    capsys.readouterr()
    assert cli(["evaluate", "--model", str(out), "--pairs", str(split_files / "dev.jsonl"), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert f"{expect:.4f}" in table


def test_similarity_refuses_bad_input(split_files, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("甲\t乙\t1\n只有两列\t1\n", encoding="utf-8")
    assert cli(["similarity", "--train", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.tsv:2" in capsys.readouterr().err
    scores = tmp_path / "scores.tsv"
    scores.write_text("甲\t乙\t2.5\n丙\t丁\t4\n", encoding="utf-8")
    assert cli(["similarity", "--train", str(scores), "--loss", "sbert", "--out", str(tmp_path / "o2")]) == 2
    assert "integer class labels" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "config.json").exists()


def test_shipped_names_and_folders_are_the_only_models(tmp_path, capsys):
    assert cli(["evaluate", "--model", "nonexistent-model", "--sets", "zh/test"]) == 2
    assert "no such model folder" in capsys.readouterr().err
    assert cli(["evaluate", "--model", "zh-mini", "--sets", "zh/test", "--limit", "40", "--no-progress"]) == 0
    from kexue.models.pretrained import embed, zh_mini
    from kexue.similarity.evaluate import evaluate_pairs
    from kexue.data.shipped import sts_zh

    model, tok = zh_mini(with_mlm=False)
    expect = evaluate_pairs(lambda t: embed(model, tok, t), sts_zh("test")[:40])
    assert f"{expect:.4f}" in capsys.readouterr().out

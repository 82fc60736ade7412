"""``kexue similarity`` on a slice of LCQMC's sentence-grouped split: the saved encoder is the best --dev epoch's (its
vectors, read back through ``kexue.load``, give the best evaluation's Spearman by scipy, not the last one's); an
epoch of 18 pairs in batches of 8 is 2 updates (the remainder of 2 joins the batch before it), so the evaluations
fall on whole epochs; what dev shares with train is printed and recorded."""
import json
import re

import pytest
import torch
from scipy.stats import spearmanr

import kexue
from kexue.cli import main as cli
from kexue.data.pairs import sim_zh
from kexue.data.splits import split_by_pair


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)


def _write(path, pairs):
    path.write_text("".join(f"{p.a}\t{p.b}\t{int(p.score)}\n" for p in pairs), encoding="utf-8")
    return str(path)


def test_the_best_dev_epoch_is_saved_and_a_small_remainder_makes_no_update(tmp_path, capsys):
    train, dev = sim_zh("LCQMC", "train")[:18], sim_zh("LCQMC", "dev")[:16]
    leaky = dev[:8] + train[:8]  # a dev file holding 8 training pairs: its overlap is reported
    out = tmp_path / "out"
    argv = ["similarity", "--train", _write(tmp_path / "train.tsv", train), "--dev", _write(tmp_path / "dev.tsv", dev),
            "--epochs", "6", "--batch-size", "8", "--maxlen", "32", "--lr", "0.01", "--no-progress", "--out", str(out)]
    capsys.readouterr()
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "18 train / 16 dev pairs (given); dev pairs sharing a sentence with train: 0 (0.0 %)" in printed
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    curve = [r["spearman"] for r in m["dev_curve"]]
    assert [r["epoch"] for r in m["dev_curve"]] == [1, 2, 3, 4, 5, 6] and m["steps"] == 12
    best = max(range(len(curve)), key=curve.__getitem__)
    assert best < 5 and curve[best] > curve[-1] + 0.05  # the best is not the last epoch
    assert m["saved_weights"] == "best" and m["best"]["step"] == m["dev_curve"][best]["step"]
    assert m["dev_spearman"] == pytest.approx(curve[best], abs=1e-9)
    # the oracle: the saved folder's own vectors, cosine, scipy's Spearman
    model = kexue.load(out)
    u, v = model.embed([p.a for p in dev]), model.embed([p.b for p in dev])
    cos = torch.nn.functional.cosine_similarity(u, v).numpy()
    rho = spearmanr(cos, [p.score for p in dev]).correlation
    assert rho == pytest.approx(curve[best], abs=1e-6) and rho != pytest.approx(curve[-1], abs=1e-3)
    assert m["dev_overlap"]["dev_sharing"] == 0 and m["dev_overlap"]["method"] == "given"
    capsys.readouterr()
    assert cli([*argv[:4], _write(tmp_path / "leaky.tsv", leaky), *argv[5:-1], str(tmp_path / "leaky")]) == 0
    assert "dev pairs sharing a sentence with train: 8 (50.0 %)" in capsys.readouterr().out


def test_classify_holds_out_sentence_pairs_grouped_by_sentence(tmp_path, capsys, shared_dir):
    """Without --dev, ``kexue classify`` on sentence pairs holds out 20 % grouped by sentence: its evaluated pairs
    share no sentence with the rest of the file (BQ reuses sentences: a pair-by-pair cut would share many)."""
    every = (shared_dir / "data/sim-zh/BQ.valid.data").read_text(encoding="utf-8").splitlines()
    groups: dict[str, list[str]] = {}
    for line in every:
        groups.setdefault(line.split("\t")[0], []).append(line)
    lines = [line for g in groups.values() if len(g) >= 3 for line in g][:120]  # each sentence1 in 3+ pairs
    rows = [tuple(c.strip() for c in line.split("\t")) for line in lines]
    (tmp_path / "bq.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli(["classify", "--train", str(tmp_path / "bq.tsv"), "--epochs", "1", "--maxlen", "48", "--no-progress",
                "--out", str(out)]) == 0
    said = re.search(r"(\d+) train / (\d+) dev pairs \(grouped, dev fraction 0.2, seed 0;", capsys.readouterr().out)
    n_train, n_dev = map(int, said.groups())
    held = [tuple(json.loads(line)["text"]) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(held) == n_dev and abs(n_dev - 24) <= 2 and n_train + n_dev == 120
    trained = [r for r in rows if (r[0], r[1]) not in set(held)]
    assert len(trained) == n_train
    assert not {s for r in trained for s in r[:2]} & {s for h in held for s in h}
    leaky = split_by_pair(rows, 0.2, 0, sides=lambda r: r[:2]).report  # what a pair-by-pair cut would share
    assert leaky.dev_sharing >= 12

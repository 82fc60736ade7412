"""``kexue similarity`` on a slice of LCQMC's sentence-grouped split: the saved encoder is the best --dev epoch's (its
vectors, read back through ``kexue.load``, give the best evaluation's Spearman by scipy, not the last one's); an
epoch of 18 pairs in batches of 8 is 2 updates (the remainder of 2 joins the batch before it), so the evaluations
fall on whole epochs; what dev shares with train is printed and recorded."""
import json

import pytest
import torch
from scipy.stats import spearmanr

import kexue
from kexue.cli import main as cli
from kexue.data.pairs import sim_zh


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

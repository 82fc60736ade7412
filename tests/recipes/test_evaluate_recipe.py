"""``kexue evaluate`` scores a model folder with the folder's own pooling (a kexue manifest's ``pooling``, or a
sentence-transformers ``1_Pooling/config.json``) and cuts texts at ``--maxlen``: its Spearman equals scipy's
Spearman of the cosine of vectors computed here straight from the encoder's hidden states ([CLS] row or masked
mean), and a cls folder scores differently from a mean folder of the same weights."""
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

import kexue
from kexue.cli import main as cli
from kexue.data import shipped as datasets
from kexue.models.pretrained import minilm, minilm_path, zh_mini
from kexue.recipes import evaluate as evaluate_recipe
from kexue.recipes.folder import save_encoder
from kexue.text.tokenizer import pad_batch


@pytest.fixture
def scored(monkeypatch):
    """Runs ``kexue evaluate`` and returns its scores at full precision (the table it prints rounds to 4 digits)."""
    rows = {}
    real = evaluate_recipe.format_table

    def keep(table, *a, **kw):
        rows.update(table)
        return real(table, *a, **kw)

    monkeypatch.setattr(evaluate_recipe, "format_table", keep)

    def run(*argv):
        rows.clear()
        assert cli(["evaluate", "--no-progress", *argv]) == 0
        (scores,) = rows.values()
        (value,) = scores.values()
        return value

    return run


def _direct(model, tok, pairs, pooling, maxlen):
    """scipy Spearman of cos(u, v), u and v pooled here from the encoder's last hidden states."""
    def vectors(texts):
        batch = pad_batch([tok.encode(t, maxlen=maxlen) for t in texts], tok.pad_id)
        with torch.no_grad():
            h = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden
        if pooling == "cls":
            return h[:, 0]
        m = batch["attention_mask"].unsqueeze(-1).float()
        return (h * m).sum(1) / m.sum(1)

    cos = F.cosine_similarity(vectors([p.a for p in pairs]), vectors([p.b for p in pairs]))
    return spearmanr(cos.numpy(), [p.score for p in pairs]).correlation


def _pair_file(path, pairs):
    path.write_text("".join(f"{p.a}\t{p.b}\t{p.score:g}\n" for p in pairs), encoding="utf-8")
    return str(path)


def test_a_kexue_folder_is_scored_with_its_own_pooling_and_maxlen(tmp_path, scored):
    pairs = datasets.sts_zh("test")[:60]
    model, tok = zh_mini()  # trained weights: their cosines are spread (a random model's nearly tie)
    file = _pair_file(tmp_path / "pairs.tsv", pairs)
    got = {}
    for pooling in ("cls", "mean"):
        folder = save_encoder(tmp_path / pooling, model, tok, pooling=pooling, maxlen=64)
        got[pooling] = scored("--model", str(folder), "--pairs", file)
        assert got[pooling] == pytest.approx(_direct(model, tok, pairs, pooling, 64), abs=1e-6)
        loaded = kexue.load(folder)  # and the folder's own predictor says the same
        sims = [r["similarity"] for r in loaded.predict([[p.a, p.b] for p in pairs])]
        assert got[pooling] == pytest.approx(spearmanr(sims, [p.score for p in pairs]).correlation, abs=1e-6)
        short = scored("--model", str(folder), "--pairs", file, "--maxlen", "12")
        assert short == pytest.approx(_direct(model, tok, pairs, pooling, 12), abs=1e-6)
        assert abs(short - got[pooling]) > 1e-3  # the cut changed the vectors
    assert abs(got["cls"] - got["mean"]) > 1e-3


def test_a_sentence_transformers_folder_is_scored_with_its_pooling_config(tmp_path, scored):
    pairs = datasets.sts_en("test")[:40]
    folder = tmp_path / "minilm-cls"
    shutil.copytree(minilm_path(), folder)
    config = folder / "1_Pooling" / "config.json"
    cfg = json.loads(config.read_text())
    cfg.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    config.write_text(json.dumps(cfg))
    file = _pair_file(tmp_path / "pairs.tsv", pairs)
    model, tok = minilm()
    cls = scored("--model", str(folder), "--pairs", file)
    assert cls == pytest.approx(_direct(model, tok, pairs, "cls", 256), abs=1e-6)
    mean = scored("--model", "minilm", "--pairs", file)  # the shipped folder pools by mean
    assert mean == pytest.approx(_direct(model, tok, pairs, "mean", 256), abs=1e-6)
    assert abs(cls - mean) > 1e-3


def test_maxlen_past_the_positions_is_refused(capsys):
    capsys.readouterr()
    assert cli(["evaluate", "--model", "zh-mini", "--maxlen", "5000", "--sets", "zh/test", "--limit", "4"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "kexue: error: --maxlen 5000 exceeds the 512 positions of zh-mini"

"""InfoNCE / unsupervised SimCSE training of an encoder (kexue.similarity.contrastive_training), checked against
the loss written out by hand in float64 from vectors computed one sentence at a time; and `kexue similarity
--loss infonce|simcse` end to end, its folder used by `kexue embed` like the pair losses'."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from kexue.data.batching import index_batches
from kexue.data.paths import data_root
from kexue.data.triplets import Triplet, read_triplets
from kexue.heads.pooling import pool
from kexue.models.pretrained import zh_mini
from kexue.similarity.contrastive_training import ContrastiveEncoder, train_contrastive_encoder
from kexue.text.tokenizer import pad_batch


def _no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(getattr(m, "dropout", None), float):
            m.dropout = 0.0
    return model


def _vector(model, tok, text: str) -> np.ndarray:
    ids, seg = tok.encode(text, maxlen=32)
    b = pad_batch([(ids, seg)], tok.pad_id)
    with torch.no_grad():
        h = model(b["input_ids"], b["segment_ids"], b["attention_mask"]).hidden
        v = pool(h, b["attention_mask"], "mean")[0].double().numpy()
    return v / np.linalg.norm(v)


def _ce(logits: np.ndarray, target: np.ndarray) -> float:
    m = logits.max(1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
    return float(np.mean(lse - logits[np.arange(len(target)), target]))


def _triplets(n: int) -> list[Triplet]:
    pos = read_triplets(data_root() / "sim-zh" / "LCQMC.valid.data")
    return [Triplet(t.anchor, t.positive, (pos[-1 - i].anchor, pos[-1 - i].positive)) for i, t in enumerate(pos[:n])]


@pytest.mark.parametrize("loss", ["infonce", "simcse"])
def test_first_step_loss_is_the_formula(loss):
    torch.manual_seed(0)
    model, tok = zh_mini(with_mlm=False)
    _no_dropout(model)
    data = _triplets(12) if loss == "infonce" else [t.anchor for t in _triplets(12)]
    scale, bs, seed = 16.0, 5, 3
    start = {k: v.clone() for k, v in model.state_dict().items()}
    hist = train_contrastive_encoder(model, tok, data, loss, steps=1, batch_size=bs, lr=1e-5, maxlen=32, seed=seed,
                                     progress=False, scale=scale)
    model.load_state_dict(start)
    model.eval()
    idx = index_batches(len(data), bs, seed)[0]  # fit seeds the RNGs, the batches use seed + epoch
    if loss == "infonce":
        a = np.stack([_vector(model, tok, data[i].anchor) for i in idx])
        cands = [np.stack([_vector(model, tok, s) for s in col]) for col in
                 ([data[i].positive for i in idx], *([data[i].negatives[j] for i in idx] for j in range(2)))]
        logits = scale * a @ np.concatenate(cands).T  # [n, 3n]: anchor i's positive is column i
        expect = _ce(logits, np.arange(len(idx)))
    else:
        v = np.stack([_vector(model, tok, data[i]) for i in idx])
        twins = np.repeat(v, 2, axis=0)  # x1, x1, x2, x2, ...: each row must pick its twin
        logits = scale * twins @ twins.T - 1e12 * np.eye(len(twins))
        expect = _ce(logits, np.arange(len(twins)) ^ 1)
    assert hist["loss"][0] == pytest.approx(expect, abs=1e-5)


def test_simcse_views_draw_their_own_dropout():
    torch.manual_seed(0)
    model, tok = zh_mini(with_mlm=False)
    m = ContrastiveEncoder(model, "simcse").train()
    b = pad_batch([tok.encode("今天天气很好", maxlen=32)] * 2, tok.pad_id)
    v = m.vectors(b)
    assert not torch.allclose(v[0], v[1])
    with pytest.raises(ValueError, match="every example needs the same number"):
        train_contrastive_encoder(model, tok, [Triplet("a", "b", ("c",)), Triplet("d", "e")], progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        train_contrastive_encoder(model, tok, ["only one"], "simcse", progress=False)


def test_recipe_infonce_and_simcse_folders(tmp_path, capsys):
    from kexue.cli import main as cli

    lines = (data_root() / "sim-zh" / "LCQMC.valid.data").read_text(encoding="utf-8").splitlines()[:60]
    train = tmp_path / "pairs.tsv"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dev = tmp_path / "dev.tsv"
    dev.write_text("\n".join((data_root() / "sts-b-zh" / "valid.tsv").read_text(encoding="utf-8")
                             .splitlines()[:40]) + "\n", encoding="utf-8")
    positives = sum(ln.endswith("\t1") for ln in lines)
    common = ["--checkpoint", "zh-mini", "--dev", str(dev), "--steps", "2", "--batch-size", "8", "--no-progress"]
    assert cli(["similarity", "--loss", "infonce", "--train", str(train), "--out", str(tmp_path / "inf"),
                "--temperature", "0.1", *common]) == 0
    metrics = json.loads((tmp_path / "inf" / "metrics.json").read_text())
    assert metrics["n_train"] == positives and metrics["scale"] == pytest.approx(10.0)
    assert metrics["loss_function"] == "infonce" and metrics["hard_negatives"] == 0
    assert cli(["similarity", "--loss", "simcse", "--train", str(train), "--out", str(tmp_path / "sim"),
                "--tensorboard", str(tmp_path / "tb"), *common]) == 0
    metrics = json.loads((tmp_path / "sim" / "metrics.json").read_text())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kexue.train.state import load_state

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    history = load_state(tmp_path / "sim" / "train" / "state.safetensors")["history"]
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == \
        [(s, float(np.float32(v))) for s, v in zip(history["step"], history["loss"])]
    assert [(e.step, e.value) for e in acc.Scalars("eval/spearman")] == \
        [(r["step"], float(np.float32(r["spearman"]))) for r in metrics["dev_curve"]]
    assert metrics["scale"] == 20.0 and metrics["n_train"] == len({s for ln in lines for s in ln.split("\t")[:2]})
    capsys.readouterr()
    assert cli(["embed", str(tmp_path / "sim"), "你好"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert len(row["embedding"]) == 256 and abs(np.linalg.norm(row["embedding"]) - 1) < 1e-5
    assert cli(["similarity", "--loss", "cosine", "--temperature", "0.1", "--train", str(train),
                "--out", str(tmp_path / "x")]) == 2
    assert "--loss cosine has none" in capsys.readouterr().err

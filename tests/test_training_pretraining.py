"""Pretraining objectives: whole-word masking masks whole jieba words; the UniLM loss sees only
the target; `kexue pretrain` runs end to end on a folder of text and resumes."""
import random

import torch

from kexue.cli import main as cli
from kexue.datasets import chinese_text
from kexue.pretraining import IGNORE, UniLMPairs, WholeWordMLM, build_char_vocab, read_corpus, unilm_loss
from kexue.models import build_model


def _corpus(tmp_path, n=60):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.txt").write_text("\n".join(t.replace("\n", "") for t in chinese_text()[:n]), encoding="utf-8")
    return d


def test_whole_word_masking(tmp_path):
    texts = read_corpus(_corpus(tmp_path))
    tok = build_char_vocab(texts, tmp_path / "vocab.txt")
    wwm = WholeWordMLM(tok, maxlen=64, mask_rate=0.3)
    random.seed(0)
    batch = wwm(texts[:16])
    assert batch["input_ids"].shape == batch["labels"].shape
    multi = 0
    for i, text in enumerate(texts[:16]):
        pos = 1
        for word in wwm.word_ids(text):
            labelled = [batch["labels"][i, pos + j].item() != IGNORE for j in range(len(word))]
            assert all(labelled) or not any(labelled)  # a word is masked whole or not at all
            if all(labelled):
                assert batch["labels"][i, pos:pos + len(word)].tolist() == word
                multi += len(word) > 1
            pos += len(word)
    assert multi > 0  # multi-character words were masked as units
    frac = (batch["labels"] != IGNORE).sum() / batch["attention_mask"].sum()
    assert 0.15 < frac < 0.45
    masked = batch["labels"] != IGNORE
    assert (batch["input_ids"][masked] == tok.mask_id).float().mean() > 0.6


def test_unilm_loss_is_target_only(tmp_path):
    texts = read_corpus(_corpus(tmp_path))
    tok = build_char_vocab(texts, tmp_path / "vocab.txt")
    model = build_model(dict(model_type="bert", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
                        application="unilm", with_mlm=True).eval()
    batch = UniLMPairs(tok, 48)(texts[:4])
    assert batch["segment_ids"].sum() > 0
    ids, segs = batch["input_ids"], batch["segment_ids"]
    logits = model(ids, segs, batch["attention_mask"]).logits
    ref = []
    for i in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            if segs[i, t] and batch["attention_mask"][i, t]:
                ref.append(-torch.log_softmax(logits[i, t - 1], -1)[ids[i, t]])
    assert torch.allclose(unilm_loss(model, batch), torch.stack(ref).mean(), atol=1e-5)


def test_pretrain_command_runs_and_resumes(tmp_path, capsys):
    d = _corpus(tmp_path, 40)
    args = ["pretrain", "--data", str(d), "--out", str(tmp_path / "out"), "--hidden", "32", "--layers", "1",
            "--maxlen", "32", "--batch-size", "8", "--checkpoint-every", "3", "--no-progress"]
    assert cli(args + ["--steps", "3"]) == 0
    assert cli(args + ["--steps", "6"]) == 0  # continues from step 3
    assert "6 steps" in capsys.readouterr().out
    for f in ("config.json", "model.safetensors", "vocab.txt"):
        assert (tmp_path / "out" / f).exists()
    model = build_model(checkpoint=tmp_path / "out", with_mlm=True)
    assert model.config.hidden_size == 32

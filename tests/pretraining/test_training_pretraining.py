"""Pretraining objectives: whole-word masking masks whole jieba words; the UniLM loss sees only
the target; `kexue pretrain` runs end to end on a folder of text and resumes."""
import json
import random

import pytest
import torch

from kexue.cli import dispatch, main as cli
from kexue.data.shipped import chinese_text
from kexue.pretraining.objectives import IGNORE, UniLMPairs, WholeWordMLM, build_char_vocab, mlm_loss, read_corpus, unilm_loss
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
    with pytest.raises(ValueError, match=r"steps: 3 -> 6"):  # a changed setting is refused by name
        dispatch(args + ["--steps", "6"])
    assert cli(args + ["--steps", "6", "--resume"]) == 0  # continues from step 3
    assert "6 steps" in capsys.readouterr().out
    for f in ("config.json", "model.safetensors", "vocab.txt", "manifest.json", "train/vocab.txt"):
        assert (tmp_path / "out" / f).exists()
    import kexue  # one unit with the run folder beside the model; an encoder kexue.load serves
    assert kexue.load(tmp_path / "out").task == "encoder"
    assert (tmp_path / "out" / "vocab.txt").read_bytes() == (tmp_path / "out" / "train" / "vocab.txt").read_bytes()
    model = build_model(checkpoint=tmp_path / "out", with_mlm=True)
    assert model.config.hidden_size == 32
    recorded = json.loads((tmp_path / "out" / "train" / "settings.json").read_text())
    assert recorded["optimizer_preset"] == {"optimizer": "AdamW", "lr": 5e-4, "weight_decay": 0.01,
                                            "schedule": "linear", "warmup": 20, "total_steps": 6, "clip_norm": 1.0}


def test_mlm_batch_without_masked_token_is_not_nan(tmp_path):
    texts = read_corpus(_corpus(tmp_path, 20))
    tok = build_char_vocab(texts, tmp_path / "vocab.txt")
    model = build_model(dict(model_type="bert", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
                        with_mlm=True).eval()
    random.seed(0)
    batch = WholeWordMLM(tok, maxlen=32, mask_rate=0.0)(texts[:4])  # no word drawn: one is forced
    masked = batch["labels"] != IGNORE
    assert 1 <= masked.sum() <= 8
    # the forced word is one whole word of one row, its labels the original ids
    row = masked.any(1).nonzero().flatten().tolist()
    assert len(row) == 1
    wwm = WholeWordMLM(tok, maxlen=32)
    original = [tok.cls_id] + [t for w in wwm.word_ids(texts[row[0]]) for t in w] + [tok.sep_id]
    assert batch["labels"][row[0]][masked[row[0]]].tolist() == [original[i] for i in masked[row[0]].nonzero().flatten()]
    assert torch.isfinite(mlm_loss(model, batch))
    # and the loss itself is 0, not 0/0, on a batch where nothing is predicted
    empty = {**batch, "labels": torch.full_like(batch["labels"], IGNORE)}
    assert mlm_loss(model, empty).item() == 0.0


def test_pretrain_new_corpus_into_old_folder_is_refused(tmp_path):
    d = _corpus(tmp_path, 30)
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.txt").write_text("\n".join(t.replace("\n", "") for t in chinese_text()[200:230]), encoding="utf-8")
    out = tmp_path / "out"
    args = ["pretrain", "--out", str(out), "--hidden", "32", "--layers", "1", "--maxlen", "32", "--batch-size", "8",
            "--steps", "2", "--no-progress"]
    assert cli(args + ["--data", str(d)]) == 0
    vocab = (out / "vocab.txt").read_bytes()
    state = (out / "train" / "state.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"corpus: \"[0-9a-f]+\" -> \"[0-9a-f]+\"") as e:
        dispatch(args + ["--data", str(other)])
    assert "--overwrite" in str(e.value) and "--resume" in str(e.value)
    assert (out / "vocab.txt").read_bytes() == vocab  # nothing already written was touched
    assert (out / "train" / "state.safetensors").read_bytes() == state
    assert cli(args + ["--data", str(other), "--overwrite"]) == 0  # a fresh vocabulary from the new corpus
    assert (out / "vocab.txt").read_bytes() != vocab
    build_char_vocab(read_corpus(other), tmp_path / "ref.txt")
    assert (out / "vocab.txt").read_bytes() == (tmp_path / "ref.txt").read_bytes()

"""Model folders whose tokenizer is not a vocab.txt: a GPT-2 folder (byte-level BPE ``tokenizer.json``) and
an mT5 folder (SentencePiece ``spiece.model``), each a seeded random model saved by kexue with a tokenizer
trained here on real Chinese text. ``kexue.load`` / ``kexue predict`` pick the family's tokenizer, and the
generated text equals transformers' own: its model class loaded from the folder, its tokenizer class from the
same files, ``generate`` greedy, decoded; ``kexue predict`` and ``kexue serve``'s app answer the same.
(T5 PEGASUS's vocab.txt folders: test_tasks_predict.py.)"""
from __future__ import annotations

import json

import pytest
import torch

import kexue
from kexue.data.shipped import sts_zh
from kexue.models import build_model
from kexue.models.checkpoints import save_pretrained
from kexue.text import HFTokenizer, load_tokenizer

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)
PROMPTS = ["一个女人在切洋葱。", "两个男人在打篮球"]
STEPS = 8


@pytest.fixture(scope="module")
def corpus():
    return [p.a for p in sts_zh("train")[:1200]] + [p.b for p in sts_zh("train")[:1200]]


def test_gpt2_folder_with_tokenizer_json(tmp_path, corpus, capsys):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=700, min_frequency=2, special_tokens=["<|endoftext|>"])
    bpe.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>",
                                                                "unk_token": "<|endoftext|>"}))
    tok = load_tokenizer(tmp_path)
    torch.manual_seed(0)
    model = build_model(dict(model_type="gpt2", vocab_size=tok.vocab_size, n_embd=32, n_layer=2, n_head=4,
                             n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    out = tmp_path / "gpt2"
    save_pretrained(model, out, tokenizer=tok)
    assert not (out / "vocab.txt").exists() and (out / "tokenizer.json").exists()
    predictor = kexue.load(out)
    assert isinstance(predictor.tokenizer, HFTokenizer)
    got = predictor.predict(PROMPTS, max_new_tokens=STEPS)
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out)).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    for text, row in zip(PROMPTS, got):
        ids = hf_tok(text, return_tensors="pt")["input_ids"]
        gen = hf.generate(ids, max_new_tokens=STEPS, do_sample=False, eos_token_id=tok.eos_id, pad_token_id=tok.eos_id)
        assert row["generations"] == [hf_tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)]
    assert any(g["generations"][0] for g in got)
    from kexue.cli import main

    assert main(["predict", str(out), PROMPTS[0], "--max-new-tokens", str(STEPS)]) == 0
    assert got[0]["generations"][0] in capsys.readouterr().out


def test_mt5_folder_with_spiece_model(tmp_path, corpus):
    spm = pytest.importorskip("sentencepiece")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(tmp_path / "spiece"),
                                   vocab_size=1200, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=0.98, num_threads=1, minloglevel=2)
    tok = load_tokenizer(tmp_path)
    torch.manual_seed(0)
    model = build_model(dict(model_type="mt5", vocab_size=tok.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                             num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                             decoder_start_token_id=0, eos_token_id=1, pad_token_id=0))
    out = tmp_path / "mt5"
    save_pretrained(model, out)
    (out / "spiece.model").write_bytes((tmp_path / "spiece.model").read_bytes())  # as an mT5 release ships it
    predictor = kexue.load(out)
    assert predictor.tokenizer.vocab_size == tok.vocab_size
    got = predictor.predict(PROMPTS, max_new_tokens=STEPS)
    hf = transformers.MT5ForConditionalGeneration.from_pretrained(str(out)).eval()
    hf_tok = transformers.T5TokenizerFast.from_pretrained(str(out))
    for text, row in zip(PROMPTS, got):
        ids = hf_tok(text, return_tensors="pt")["input_ids"]
        gen = hf.generate(ids, max_new_tokens=STEPS, do_sample=False, num_beams=1)
        assert row["generations"] == [hf_tok.decode(gen[0], skip_special_tokens=True)]
    beams = predictor.predict(PROMPTS, max_new_tokens=STEPS, num_beams=3)
    assert all(len(b["generations"]) == 1 for b in beams)
    from fastapi.testclient import TestClient

    from kexue.cli.serve import create_app

    with TestClient(create_app(predictor, "mt5", max_wait_ms=1)) as client:  # kexue serve's app
        answer = client.post("/predict", json={"inputs": PROMPTS, "options": {"max_new_tokens": STEPS}})
    assert answer.status_code == 200 and answer.json()["outputs"] == got

"""BERT and RoFormer forward passes against HF transformers on the same random weights."""
import pytest
import torch
from transformers import (BertConfig, BertForMaskedLM, BertModel, RoFormerConfig, RoFormerForMaskedLM,
                          RoFormerModel)

from kexue.models.checkpoints import save_pretrained
from kexue.models import build_model

SMALL = dict(vocab_size=97, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
             max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)
SHAPES = [(1, 5), (3, 17), (2, 64)]


def _inputs(b, l, vocab=97):
    g = torch.Generator().manual_seed(b * 100 + l)
    ids = torch.randint(1, vocab, (b, l), generator=g)
    segs = torch.randint(0, 2, (b, l), generator=g)
    mask = torch.ones(b, l, dtype=torch.long)
    for row in range(1, b):  # ragged padding on every row but the first
        mask[row, l - row * (l // (b + 1)) - 1:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, segs, mask


def _check(hf_model, ours, b, l, mlm):
    ids, segs, mask = _inputs(b, l)
    with torch.no_grad():
        theirs = hf_model(input_ids=ids, token_type_ids=segs, attention_mask=mask)
        out = ours(ids, segs, mask)
    keep = mask.bool()
    if mlm:
        diff = (out.logits - theirs.logits)[keep].abs().max()
    else:
        diff = (out.hidden - theirs.last_hidden_state)[keep].abs().max()
    assert diff <= 1e-5, diff


@pytest.mark.parametrize("mlm", [False, True])
@pytest.mark.parametrize("family", ["bert", "roformer"])
def test_forward_matches_transformers(tmp_path, family, mlm):
    if family == "bert":
        cfg, cls = BertConfig(**SMALL), (BertForMaskedLM if mlm else BertModel)
    else:
        cfg, cls = RoFormerConfig(**SMALL, embedding_size=48), (RoFormerForMaskedLM if mlm else RoFormerModel)
    torch.manual_seed(1)
    hf = cls(cfg).eval()
    hf.save_pretrained(tmp_path)  # their writer, our reader
    ours = build_model(checkpoint=tmp_path, with_mlm=mlm, with_pool=(family == "bert" and not mlm)).eval()
    for b, l in SHAPES:
        _check(hf, ours, b, l, mlm)
    if family == "bert" and not mlm:
        ids, segs, mask = _inputs(2, 9)
        with torch.no_grad():
            pooled = hf(input_ids=ids, token_type_ids=segs, attention_mask=mask).pooler_output
            assert (ours(ids, segs, mask).pooled - pooled).abs().max() <= 1e-5


@pytest.mark.parametrize("family", ["bert", "roformer"])
def test_saved_checkpoint_loads_in_transformers(tmp_path, family):
    torch.manual_seed(2)
    ours = build_model({**SMALL, "model_type": family}, with_mlm=True).eval()
    save_pretrained(ours, tmp_path)  # our writer, their reader
    cls = BertForMaskedLM if family == "bert" else RoFormerForMaskedLM
    hf = cls.from_pretrained(tmp_path).eval()
    for b, l in SHAPES[:2]:
        _check(hf, ours, b, l, mlm=True)


def test_roformer_embedding_projection(tmp_path):
    """RoFormer with embedding_size < hidden_size (factorised embeddings + projection)."""
    cfg = RoFormerConfig(**{**SMALL, "hidden_size": 64, "intermediate_size": 128}, embedding_size=32)
    torch.manual_seed(3)
    hf = RoFormerForMaskedLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    ours = build_model(checkpoint=tmp_path, with_mlm=True).eval()
    _check(hf, ours, 2, 11, mlm=True)

"""``logits_mask``: MLM / LM logits only at the positions a loss reads (BERT's ``masked_lm_positions``).

Oracles: the full forward's logits at the same positions, and transformers' ``BertForMaskedLM`` loss on the
same weights and labels for :func:`kexue.pretraining.mlm_loss`; gradients equal the all-positions loss's.
"""
import random

import pytest
import torch
from families_common import sentences, tiny, tokenizer

from kexue.models.checkpoints import save_pretrained
from kexue.pretraining.objectives import IGNORE, WholeWordMLM, mlm_loss


def batch(n: int = 6, maxlen: int = 40) -> dict:
    random.seed(0)
    return WholeWordMLM(tokenizer(), maxlen=maxlen)(list(sentences(n)))


@pytest.mark.parametrize("family,application,options", [
    ("bert", "encoder", {"with_mlm": True}), ("roformer", "encoder", {"with_mlm": True}),
    ("roformer_v2", "encoder", {"with_mlm": True}), ("bert", "unilm", {}), ("gpt", "lm", {})])
def test_selected_logits_equal_the_full_ones(family, application, options):
    model = tiny(family, application, **options)
    b = batch()
    picked = b["labels"] != IGNORE
    assert 0 < picked.sum() < picked.numel()
    segs = None if family == "gpt" else b["segment_ids"]
    with torch.no_grad():
        full = model(b["input_ids"], segs, b["attention_mask"])
        some = model(b["input_ids"], segs, b["attention_mask"], logits_mask=picked)
    assert some.logits.shape == (int(picked.sum()), full.logits.shape[-1])
    torch.testing.assert_close(some.logits, full.logits[picked], rtol=0, atol=1e-5)
    torch.testing.assert_close(some.hidden, full.hidden, rtol=0, atol=0)  # the hidden states stay whole


def test_mlm_loss_equals_transformers_and_the_all_positions_gradient(tmp_path):
    from transformers import BertForMaskedLM

    model = tiny("bert", with_mlm=True)
    save_pretrained(model, tmp_path)
    hf = BertForMaskedLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    b = batch(8)
    ours = mlm_loss(model, b)
    theirs = hf(input_ids=b["input_ids"], token_type_ids=b["segment_ids"], attention_mask=b["attention_mask"],
                labels=b["labels"]).loss
    assert abs(ours.item() - theirs.item()) <= 1e-5 * theirs.item()
    # the same loss and gradients as projecting every position and ignoring the unmasked ones
    model.zero_grad()
    ours.backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logits = model(b["input_ids"], b["segment_ids"], b["attention_mask"]).logits
    slow = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=IGNORE)
    slow.backward()
    assert abs(slow.item() - ours.item()) <= 1e-6 * slow.item()
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(fast[n], p.grad, rtol=1e-4, atol=1e-7, msg=n)


def test_bad_logits_mask_is_refused():
    model = tiny("bert", with_mlm=True, cond_dim=8)
    b = batch(2)
    ids, segs, mask = b["input_ids"], b["segment_ids"], b["attention_mask"]
    with pytest.raises(ValueError, match="bool tensor shaped like input_ids"):
        model(ids, segs, mask, logits_mask=(b["labels"] != IGNORE).long())
    with pytest.raises(ValueError, match="bool tensor shaped like input_ids"):
        model(ids, segs, mask, logits_mask=torch.ones(ids.shape[0], ids.shape[1] + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="Conditional LayerNorm"):
        model(ids, segs, mask, cond=torch.zeros(ids.shape[0], 8), logits_mask=b["labels"] != IGNORE)

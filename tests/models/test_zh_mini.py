"""The shipped kexue-zh-mini: loads through build_model and transformers alike, and its model card's
held-out MLM loss is what the weights give on the held-out slice (within 1 %)."""
import json

import pytest
import torch

from kexue.models import build_model
from kexue.models.pretrained import zh_mini, zh_mini_path
from kexue.pretraining.zh_mini import corpus, heldout_loss, split_corpus


@pytest.fixture(scope="module")
def model_and_tok():
    return zh_mini()


def test_loads_strictly_and_equals_transformers(model_and_tok):
    from transformers import RoFormerForMaskedLM

    model, tok = model_and_tok
    assert build_model(checkpoint=zh_mini_path()).config.vocab_size == tok.vocab_size
    hf = RoFormerForMaskedLM.from_pretrained(str(zh_mini_path()), dtype=torch.float32).eval()
    enc = tok.encode_batch(["床前明月光，疑是地上霜。", "今天天气怎么样"], maxlen=32)
    with torch.no_grad():
        ours = model(enc["input_ids"], enc["segment_ids"], enc["attention_mask"]).logits
        ref = hf(input_ids=enc["input_ids"], token_type_ids=enc["segment_ids"],
                 attention_mask=enc["attention_mask"]).logits
    real = enc["attention_mask"].bool()
    assert (ours[real] - ref[real]).abs().max() <= 1e-4


def test_model_card_heldout_loss_reproduced(model_and_tok):
    model, tok = model_and_tok
    metrics = json.loads((zh_mini_path() / "metrics.json").read_text())
    _, held = split_corpus(corpus(), heldout=metrics["passages_heldout"])
    assert len(held) == metrics["passages_heldout"]
    loss = heldout_loss(model, tok, held)
    assert abs(loss - metrics["heldout_mlm_loss"]) <= 0.01 * metrics["heldout_mlm_loss"]
    assert str(metrics["heldout_mlm_loss"]) in (zh_mini_path() / "README.md").read_text()


def test_pretraining_learned_something(model_and_tok):
    """Against the untrained network of the same shape: the held-out loss is far below chance."""
    model, tok = model_and_tok
    _, held = split_corpus(corpus())
    torch.manual_seed(0)
    fresh = build_model(model.config, with_mlm=True).eval()
    assert heldout_loss(model, tok, held[:64]) < heldout_loss(fresh, tok, held[:64]) - 2.0

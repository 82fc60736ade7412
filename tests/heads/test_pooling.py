"""Sentence poolings of ``kexue.models.pretrained.embed`` (mean / [CLS] / first-last-avg) on the shipped
kexue-zh-mini equal the same poolings computed from transformers' ``output_hidden_states``."""
import pytest
import torch

from kexue.data import shipped as datasets
from kexue.models.pretrained import POOLINGS, embed, zh_mini, zh_mini_path


def _masked_mean(h, m):
    m = m.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1)


def test_poolings_equal_transformers_hidden_states():
    from transformers import RoFormerModel

    pairs = datasets.sts_zh("valid")[:24]
    texts = [p.a for p in pairs] + [p.b for p in pairs]
    model, tok = zh_mini(with_mlm=False)
    ours = embed(model, tok, texts, batch_size=16, maxlen=64, normalize=False, pooling=POOLINGS)
    hf = RoFormerModel.from_pretrained(str(zh_mini_path()), dtype=torch.float32).eval()
    enc = tok.encode_batch(texts, maxlen=64)
    with torch.no_grad():
        hs = hf(input_ids=enc["input_ids"], token_type_ids=enc["segment_ids"],
                attention_mask=enc["attention_mask"], output_hidden_states=True).hidden_states
    mask = enc["attention_mask"]
    assert len(hs) == model.config.num_hidden_layers + 1  # embeddings + every layer
    ref = {"mean": _masked_mean(hs[-1], mask), "cls": hs[-1][:, 0],
           "first-last-avg": (_masked_mean(hs[1], mask) + _masked_mean(hs[-1], mask)) / 2}
    for name in POOLINGS:
        assert (ours[name] - ref[name]).abs().max() <= 1e-5, name
    # a single pooling gives the tensor itself, the same as from the multi-pooling pass, L2-normalised by default
    single = embed(model, tok, texts, batch_size=16, maxlen=64, pooling="first-last-avg")
    assert torch.allclose(single, torch.nn.functional.normalize(ours["first-last-avg"], dim=-1), atol=1e-6)
    assert not torch.allclose(ref["first-last-avg"], ref["mean"], atol=1e-3)  # the poolings do differ


def test_unknown_pooling_refused_by_name():
    model, tok = zh_mini(with_mlm=False)
    with pytest.raises(ValueError, match="max-pool"):
        embed(model, tok, ["你好"], pooling="max-pool")
    with pytest.raises(ValueError, match="pooling"):
        embed(model, tok, ["你好"], pooling=[])

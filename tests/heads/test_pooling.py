"""Sentence poolings (:func:`kexue.heads.pooling.pool`, used by ``kexue.models.pretrained.embed`` and every
trainer) equal sentence-transformers' ``Pooling`` module on the same token vectors — real kexue-zh-mini
states of a padded batch (right and left padding), fp32 and bf16 — and ``embed`` equals those poolings
of transformers' ``output_hidden_states``."""
import pytest
import torch
from sentence_transformers.sentence_transformer.modules import Pooling

from kexue.data import shipped as datasets
from kexue.heads.pooling import MODES, mean_pool, pool
from kexue.models.pretrained import POOLINGS, embed, zh_mini, zh_mini_path

ST_NAMES = {"cls": "cls", "mean": "mean", "max": "max", "last-token": "lasttoken", "weighted-mean": "weightedmean"}


def st_pool(hidden, mask, mode):
    """sentence-transformers' Pooling of ``hidden`` under ``mode``; first-last-avg from two of its means."""
    if mode == "first-last-avg":
        return (st_pool(hidden[1], mask, "mean") + st_pool(hidden[-1], mask, "mean")) / 2
    if isinstance(hidden, (list, tuple)):
        hidden = hidden[-1]
    module = Pooling(hidden.shape[-1], pooling_mode=ST_NAMES[mode])
    return module({"token_embeddings": hidden.clone(), "attention_mask": mask})["sentence_embedding"]


@pytest.fixture(scope="module")
def hf_states():
    """(every layer's states, attention mask, texts) of transformers' RoFormer on kexue-zh-mini's weights,
    a right-padded batch of real STS-B-zh sentences of different lengths."""
    from transformers import RoFormerModel

    pairs = datasets.sts_zh("valid")[:24]
    texts = [p.a for p in pairs] + [p.b for p in pairs]
    _, tok = zh_mini(with_mlm=False)
    hf = RoFormerModel.from_pretrained(str(zh_mini_path()), dtype=torch.float32).eval()
    enc = tok.encode_batch(texts, maxlen=64)
    with torch.no_grad():
        hs = hf(input_ids=enc["input_ids"], token_type_ids=enc["segment_ids"],
                attention_mask=enc["attention_mask"], output_hidden_states=True).hidden_states
    mask = enc["attention_mask"]
    assert len(set(mask.sum(1).tolist())) > 5 and (mask == 0).any()  # really padded, lengths vary
    return list(hs), mask, texts


def left_padded(states, mask):
    """The same rows with their padding moved to the left (real tokens at the end)."""
    lengths, width = mask.sum(1), mask.shape[1]
    index = (torch.arange(width)[None, :] - (width - lengths)[:, None]) % width  # shift each row right by its pad
    return [h.gather(1, index[..., None].expand_as(h)) for h in states], mask.gather(1, index)


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["cls", "mean", "max", "first-last-avg", "last-token", "weighted-mean"])
def test_every_mode_equals_sentence_transformers(hf_states, mode, dtype, padding):
    states, mask, _ = hf_states
    if padding == "left":
        states, mask = left_padded(states, mask)
        assert (mask[:, 0] == 0).any() and (mask[:, -1] == 1).all()
    states = [h.to(dtype) for h in states]
    ours = pool(states, mask, mode)
    ref = st_pool(states, mask, mode)
    assert ours.dtype == dtype and ours.shape == ref.shape == (mask.shape[0], states[-1].shape[-1])
    assert (ours.float() - ref.float()).abs().max() <= 1e-6, (mode, dtype, padding)
    if mode != "first-last-avg":  # the last layer alone, and sentence-transformers' own spelling, agree
        assert torch.equal(pool(states[-1], mask, ST_NAMES[mode]), ours)


def test_right_and_left_padding_give_the_same_vectors(hf_states):
    states, mask, _ = hf_states
    left, left_mask = left_padded(states, mask)
    for mode in ("cls", "mean", "max", "first-last-avg", "last-token", "weighted-mean"):
        assert (pool(states, mask, mode) - pool(left, left_mask, mode)).abs().max() <= 1e-5, mode


def test_mean_keeps_the_old_formula_bit_for_bit(hf_states):
    """The pooling every CoSENT trainer used (Σ m h / max(Σ m, 1e-9)) is unchanged in fp32."""
    states, mask, _ = hf_states
    m = mask.unsqueeze(-1).to(states[-1].dtype)
    assert torch.equal(pool(states[-1], mask, "mean"), (states[-1] * m).sum(1) / m.sum(1).clamp(min=1e-9))
    assert torch.equal(mean_pool(states[-1], mask), pool(states[-1], mask, "mean"))
    assert torch.equal(pool(states[-1], mask, "cls"), states[-1][:, 0])  # right padding: position 0


def test_embed_equals_the_poolings_of_transformers_hidden_states(hf_states):
    states, mask, texts = hf_states
    model, tok = zh_mini(with_mlm=False)
    names = [m for m in POOLINGS if m != "pooler"]  # kexue-zh-mini has no pooler
    ours = embed(model, tok, texts, batch_size=16, maxlen=64, normalize=False, pooling=names)
    assert set(ours) == set(names) and len(names) == 6
    for name in names:
        assert (ours[name] - st_pool(states, mask, name)).abs().max() <= 1e-5, name
    # a single pooling gives the tensor itself, the same as from the multi-pooling pass, L2-normalised by default
    single = embed(model, tok, texts, batch_size=16, maxlen=64, pooling="first-last-avg")
    assert torch.allclose(single, torch.nn.functional.normalize(ours["first-last-avg"], dim=-1), atol=1e-6)
    for a, b in [("first-last-avg", "mean"), ("mean", "max"), ("cls", "last-token"), ("mean", "weighted-mean")]:
        assert not torch.allclose(ours[a], ours[b], atol=1e-3)  # the poolings do differ


def test_pooler_mode_reads_the_models_pooler():
    from families_common import tiny

    model = tiny("bert", with_pool=True).eval()
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 7, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        out = model(ids, torch.zeros_like(ids), mask)
    assert out.pooled is not None and torch.equal(pool(out, mask, "pooler"), out.pooled)
    assert torch.equal(pool(out, mask, "cls"), out.hidden[:, 0])
    with pytest.raises(ValueError, match="with_pool=True"):
        pool(out.hidden, mask, "pooler")


def test_empty_sequences_and_bad_input_are_clear_errors():
    h = torch.randn(3, 4, 8)
    empty = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    for mode in MODES:
        with pytest.raises(ValueError, match=r"rows \[1\] are all zero"):
            pool(h, empty, mode)
    with pytest.raises(ValueError, match="unknown pooling 'max-pool'"):
        pool(h, None, "max-pool")
    with pytest.raises(ValueError, match="attention_mask has shape"):
        pool(h, torch.ones(3, 5), "mean")
    with pytest.raises(ValueError, match="output_hidden_states=True"):
        pool(h, None, "first-last-avg")
    with pytest.raises(ValueError, match=r"\[batch, length, hidden\]"):
        pool(h[0], None, "mean")
    assert torch.allclose(pool(h, None, "mean"), h.mean(1), atol=1e-6)  # no mask: every token is real


def test_unknown_pooling_refused_by_name():
    model, tok = zh_mini(with_mlm=False)
    with pytest.raises(ValueError, match="max-pool"):
        embed(model, tok, ["你好"], pooling="max-pool")
    with pytest.raises(ValueError, match="pooling"):
        embed(model, tok, ["你好"], pooling=[])

"""T5 / T5 v1.1 / mT5 forward parity with HF transformers on random weights."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from kexue.models.t5 import T5, T5Config  # noqa: E402
from generation_common import one_thread  # noqa: F401,E402  (autouse fixture)

SMALL_DEFAULT = dict(vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
             relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
             decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def hf_pair(kind: str, seed: int = 0, **overrides):
    """(HF model, kexue model) with the same random weights. kind: t5 (original), t5v1_1, mt5."""
    torch.manual_seed(seed)
    SMALL = dict(SMALL_DEFAULT, **overrides)
    if kind == "mt5":
        hf = transformers.MT5ForConditionalGeneration(transformers.MT5Config(feed_forward_proj="gated-gelu", **SMALL))
        d = dict(SMALL, model_type="mt5", feed_forward_proj="gated-gelu")
    elif kind == "t5v1_1":
        hf = transformers.T5ForConditionalGeneration(
            transformers.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False, **SMALL))
        d = dict(SMALL, model_type="t5", feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    else:
        hf = transformers.T5ForConditionalGeneration(transformers.T5Config(feed_forward_proj="relu", **SMALL))
        d = dict(SMALL, model_type="t5", feed_forward_proj="relu")
    if kind != "t5":  # real v1.1 / mT5 checkpoints have an lm_head distinct from the embedding
        hf.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf.lm_head.weight) * 0.5)
    with torch.no_grad():  # make RMSNorm gains non-trivial
        for n, p in hf.named_parameters():
            if "layer_norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    hf.eval()
    ours = T5(T5Config.from_dict(d))
    ours.load_hf_state_dict(hf.state_dict())
    return hf.eval(), ours.eval()


@pytest.mark.parametrize("kind", ["t5", "t5v1_1", "mt5"])
def test_forward_matches_transformers(kind):
    hf, ours = hf_pair(kind)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 97, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    dec = torch.randint(2, 97, (3, 9), generator=g)
    dec[:, 0] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        got = ours(ids, dec, attention_mask=mask)
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), (got - ref).abs().max()


def test_long_relative_distances_hit_log_buckets():
    hf, ours = hf_pair("t5v1_1", seed=3)
    ids = torch.randint(2, 97, (1, 40))
    dec = torch.randint(2, 97, (1, 30))
    with torch.no_grad():
        ref = hf(input_ids=ids, decoder_input_ids=dec).logits
        got = ours(ids, dec)
    assert torch.allclose(got, ref, atol=1e-5, rtol=0)


def test_incremental_decode_equals_full():
    from kexue.layers import KVCache
    _, ours = hf_pair("mt5")
    ids = torch.randint(2, 97, (2, 10))
    dec = torch.randint(2, 97, (2, 7))
    with torch.no_grad():
        enc = ours.encode(ids)
        full = ours.decode(dec, enc)
        cache = KVCache()
        steps = [ours.decode(dec[:, :3], enc, cache=cache)]
        steps += [ours.decode(dec[:, i:i + 1], enc, cache=cache) for i in range(3, 7)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5, rtol=0)

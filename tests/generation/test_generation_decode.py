"""Greedy / beam search token-identical to HF generate (GPT-2 and T5); cached == uncached decoding."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from kexue.generation import beam_search, decoding_state, greedy  # noqa: E402
from kexue.models.gpt import GPT  # noqa: E402

from test_generation_t5 import hf_pair  # noqa: E402
from generation_common import one_thread  # noqa: F401,E402  (autouse fixture)

EOS = 3
GPT2 = dict(vocab_size=101, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS)


@pytest.fixture(scope="module")
def gpt2_pair():
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2)).eval()
    with torch.no_grad():  # larger weights -> peaked, varied distributions (eos does get chosen)
        for p in hf.parameters():
            p.mul_(8.0) if p.dim() == 2 else None
        hf.transformer.wte.weight[EOS].mul_(1.5)  # make the end token likely enough to end some prompts
    return hf, GPT.from_hf_gpt2(hf.state_dict(), GPT2).eval()


@pytest.fixture(scope="module")
def t5_pair():
    hf, ours = hf_pair("t5v1_1", seed=5, num_decoder_layers=2)  # HF generate needs equal depths
    with torch.no_grad():
        for m in (hf, ours):
            m.lm_head.weight.mul_(6.0)
            m.lm_head.weight[1].mul_(3.0)  # make the end token (id 1) likely enough to end some prompts
    return hf, ours


def prompts(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 97, (1, int(torch.randint(3, 9, (1,), generator=g))), generator=g)
            for _ in range(n)]


def hf_tokens(out: torch.Tensor, start: int) -> list[int]:
    row = out[0, start:].tolist()
    return row[: row.index(EOS)] if EOS in row else row


def test_gpt2_forward_matches(gpt2_pair):
    hf, ours = gpt2_pair
    ids = torch.randint(0, 101, (2, 12))
    with torch.no_grad():
        assert torch.allclose(ours(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_gpt2_generate_matches_hf(gpt2_pair, num_beams):
    hf, ours = gpt2_pair
    settings = dict(max_new_tokens=12, min_new_tokens=2)
    lengths = set()
    for ids in prompts():
        ref = hf.generate(ids, num_beams=num_beams, do_sample=False, eos_token_id=EOS, pad_token_id=EOS,
                          length_penalty=1.0, early_stopping=False, **settings)
        want = hf_tokens(ref, ids.shape[1])
        state = decoding_state(ours, ids)
        got = (greedy(state, eos_id=EOS, **settings) if num_beams == 1
               else beam_search(state, eos_id=EOS, num_beams=num_beams, **settings))[0]
        assert got == want
        lengths.add(len(got))
    assert len(lengths) > 1  # some prompts stopped early at the end token


@pytest.mark.parametrize("num_beams", [1, 4])
def test_t5_generate_matches_hf(t5_pair, num_beams):
    hf, ours = t5_pair
    settings = dict(max_new_tokens=10, min_new_tokens=1)
    lengths = set()
    for ids in prompts(seed=1):
        ids = ids.clamp(max=96)
        ref = hf.generate(ids, num_beams=num_beams, do_sample=False, eos_token_id=1, pad_token_id=0,
                          decoder_start_token_id=0, length_penalty=1.0, early_stopping=False, **settings)
        row = ref[0, 1:].tolist()
        want = row[: row.index(1)] if 1 in row else row
        state = decoding_state(ours, ids)
        got = (greedy(state, eos_id=1, **settings) if num_beams == 1
               else beam_search(state, eos_id=1, num_beams=num_beams, **settings))[0]
        assert got == want
        lengths.add(len(got))
    assert len(lengths) > 1  # some prompts stopped early at the end token


def _batch(rows, pad=0):
    """Left-pad a list of [1, L] prompts."""
    n = max(r.shape[1] for r in rows)
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, n - r.shape[1]:], mask[i, n - r.shape[1]:] = r[0], 1
    return ids, mask


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_equals_uncached_and_batched_equals_single(gpt2_pair, num_beams):
    _, ours = gpt2_pair
    rows = prompts(seed=2)
    ids, mask = _batch(rows)
    run = (lambda s: greedy(s, 10, EOS)) if num_beams == 1 else (lambda s: beam_search(s, 10, EOS, num_beams))
    cached = run(decoding_state(ours, ids, mask))
    uncached = run(decoding_state(ours, ids, mask, use_cache=False))
    single = [run(decoding_state(ours, r))[0] for r in rows]
    assert cached == uncached == single


def test_t5_cached_equals_uncached_ragged(t5_pair):
    _, ours = t5_pair
    rows = [r.clamp(max=96) for r in prompts(seed=3)]
    n = max(r.shape[1] for r in rows)  # T5 pads on the right
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : r.shape[1]], mask[i, : r.shape[1]] = r[0], 1
    for run in (lambda s: greedy(s, 8, 1), lambda s: beam_search(s, 8, 1, 3)):
        cached = run(decoding_state(ours, ids, mask))
        uncached = run(decoding_state(ours, ids, mask, use_cache=False))
        single = [run(decoding_state(ours, r))[0] for r in rows]
        assert cached == uncached == single


def test_rope_gpt_from_build_model_cached_equals_uncached():
    from kexue.models import build_model
    torch.manual_seed(0)
    model = build_model(dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, hidden_act="gelu_new", type_vocab_size=0, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, rope=True), family="gpt").eval()
    assert model.application == "lm" and model.position is None
    rows = prompts(seed=4)
    ids, mask = _batch(rows)
    for run in (lambda s: greedy(s, 9), lambda s: beam_search(s, 9, None, 2)):
        cached = run(decoding_state(model, ids, mask))
        assert cached == run(decoding_state(model, ids, mask, use_cache=False))
        assert cached == [run(decoding_state(model, r))[0] for r in rows]

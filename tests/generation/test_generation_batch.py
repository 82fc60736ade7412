"""Continuous batching: merged decoding states and the BatchDecoder give every request what it gets alone.

Oracles: each request decoded alone by ``greedy`` / ``sample`` (batch of its own, no padding, its own
seeded generator) and each state stepped alone. Requests differ in prompt length, options (greedy,
sampling with seeds and n samples, max / min new tokens), segment ids, Conditional-LayerNorm vectors and
banned ids, and join the batch at different steps."""
import pytest
import torch

from kexue.generation import (BatchDecoder, GenerationOptions, PrefixDecoding, TokenPicker, decode_state,
                              decoding_state, greedy, sample)
from kexue.models import build_model
from generation_common import BASE, COND, EOS, V, one_thread, peaked  # noqa: F401  (autouse fixture)

@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return peaked(build_model(BASE, application="lm", with_mlm=True))


@pytest.fixture(scope="module")
def unilm():
    torch.manual_seed(1)
    return peaked(build_model(BASE, application="unilm", with_mlm=True, cond_dim=COND))


def prompts(k=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, V, (int(n),), generator=g).tolist() for n in torch.randint(2, 12, (k,), generator=g)]


def state_of(model, row, segment=None, cond=None, banned=None, use_cache=True):
    segs = None if segment is None else torch.tensor([[segment] * len(row)])
    return PrefixDecoding(model, torch.tensor([row]), None, segs, use_cache, cond, banned,
                          new_segment=None if segment is None else 1 - segment)


@pytest.mark.parametrize("use_cache", [True, False])
def test_merged_states_step_like_each_state_alone(unilm, use_cache):
    rows = prompts(3)
    conds = torch.randn(3, COND, generator=torch.Generator().manual_seed(5))
    make = lambda i: state_of(unilm, rows[i], i % 2, conds[i:i + 1], [[5 + i]], use_cache)  # noqa: E731
    alone = [make(i) for i in range(3)]
    first = [s.prefill() for s in alone]
    joined = [make(i) for i in range(3)]
    logits = [s.prefill() for s in joined]
    merged = PrefixDecoding.merge(joined)
    assert merged.rows == 3 and merged.mask is not None  # prompts of 3 lengths: left padding
    assert torch.allclose(torch.cat(logits), torch.cat(first))
    for step in range(4):
        tokens = torch.cat(first).argmax(-1)
        first = [s.step(t[None]) for s, t in zip(alone, tokens)]
        got = merged.step(tokens)
        assert torch.allclose(got, torch.cat(first), atol=1e-5), step
        assert (got[:, 5:8].isinf().diagonal() == torch.tensor([True, True, True])).all()  # each row's own ban
    merged.reorder(torch.tensor([2, 0]))  # rows leave: the others go on unchanged
    tokens = torch.cat(first).argmax(-1)
    first = [s.step(t[None]) for s, t in zip(alone, tokens)]
    assert torch.allclose(merged.step(tokens[[2, 0]]), torch.cat([first[2], first[0]]), atol=1e-5)


def test_merge_refuses_what_cannot_join(lm, unilm):
    a, b = state_of(lm, [5, 6]), state_of(unilm, [5, 6, 7], 0, torch.zeros(1, COND))
    with pytest.raises(ValueError, match="not been prefilled"):
        PrefixDecoding.merge([a])
    a.prefill(), b.prefill()
    with pytest.raises(ValueError, match="another model"):
        PrefixDecoding.merge([a, b])
    c = state_of(lm, [5, 6, 7], segment=0)
    c.prefill()
    with pytest.raises(ValueError, match="segment ids in one state only"):
        PrefixDecoding.merge([a, c])


OPTIONS = [dict(max_new_tokens=9), dict(max_new_tokens=12, do_sample=True, seed=4, top_k=8),
           dict(max_new_tokens=7, min_new_tokens=3), dict(max_new_tokens=10, do_sample=True, seed=1, num_samples=3,
                                                          temperature=0.7, top_p=0.9),
           dict(max_new_tokens=12, do_sample=True, seed=9, rule="bert4keras", min_ends=2), dict(max_new_tokens=5)]


def alone(model, row, options, segment=None):
    return decode_state(state_of(model, row, segment), GenerationOptions(**options), EOS)


@pytest.mark.parametrize("max_rows", [64, 4])
def test_batch_decoder_equals_each_request_alone(lm, max_rows):
    rows = prompts(len(OPTIONS))
    expected = [alone(lm, r, o) for r, o in zip(rows, OPTIONS)]
    dec = BatchDecoder(max_rows=max_rows)
    jobs = [dec.submit(state_of(lm, r), GenerationOptions(**o), EOS, owner=i)
            for i, (r, o) in enumerate(zip(rows[:3], OPTIONS[:3]))]
    dec.step(), dec.step()  # the others join two steps later, while the first ones decode
    jobs += [dec.submit(state_of(lm, r), GenerationOptions(**o), EOS, owner=i + 3)
             for i, (r, o) in enumerate(zip(rows[3:], OPTIONS[3:]))]
    dec.run()
    assert all(j.done and j.error is None for j in jobs)
    assert [j.tokens for j in jobs] == expected
    assert any(len(t) == 12 for e in expected for t in e) and any(len(t) < 5 for e in expected for t in e)
    if max_rows == 64:
        assert dec.peak_rows == sum(j.rows for j in jobs)  # all decoded together at some step
    else:
        assert dec.peak_rows <= 4


def test_unilm_segments_and_cond_requests_batch_like_alone(unilm):
    rows = prompts(4, seed=8)
    conds = torch.randn(4, COND, generator=torch.Generator().manual_seed(2))
    opts = GenerationOptions(max_new_tokens=8)
    expected = [greedy(state_of(unilm, r, i % 2, conds[i:i + 1]), 8, EOS) for i, r in enumerate(rows)]
    dec = BatchDecoder()
    jobs = [dec.submit(state_of(unilm, r, i % 2, conds[i:i + 1]), opts, EOS) for i, r in enumerate(rows)]
    dec.run()
    assert [j.tokens for j in jobs] == expected
    assert len({tuple(e[0]) for e in expected}) > 1


def test_t5_requests_decode_in_groups_of_their_own():
    from kexue.models.t5 import T5Config

    cfg = T5Config.from_dict(dict(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                  decoder_start_token_id=0, eos_token_id=EOS, pad_token_id=0))
    torch.manual_seed(2)
    t5 = build_model(cfg, family="t5").eval()
    rows = prompts(3, seed=11)
    expected = [greedy(decoding_state(t5, torch.tensor([r])), 6, EOS) for r in rows]
    dec = BatchDecoder()
    jobs = [dec.submit(decoding_state(t5, torch.tensor([r])), GenerationOptions(max_new_tokens=6), EOS) for r in rows]
    dec.run()
    assert [j.tokens for j in jobs] == expected


def test_admission_is_round_robin_across_owners(lm):
    """Owner "big" queues 6 requests of 2 rows; owner "small" one, after: with 4 rows at most,
    "small" joins as soon as a row is free, before the big owner's later requests."""
    rows = prompts(7, seed=5)
    dec = BatchDecoder(max_rows=4)
    opts = GenerationOptions(max_new_tokens=4, do_sample=True, seed=0, num_samples=2)
    big = [dec.submit(state_of(lm, r), opts, None, owner="big") for r in rows[:6]]
    small = dec.submit(state_of(lm, rows[6]), GenerationOptions(max_new_tokens=4), None, owner="small")
    order = []
    while dec.busy:
        for job in dec.step():
            if job.done:
                order.append("small" if job is small else big.index(job))
    assert order.index("small") < order.index(3)
    assert small.tokens == greedy(state_of(lm, rows[6]), 4, None)


def test_refusals_and_cancel(lm):
    dec = BatchDecoder()
    with pytest.raises(ValueError, match="num_beams=3: beam search is not batched"):
        dec.submit(state_of(lm, [5, 6]), GenerationOptions(num_beams=3), EOS)
    with pytest.raises(ValueError, match="max_rows=0"):
        BatchDecoder(0)
    with pytest.raises(ValueError, match="num_beams=2"):
        TokenPicker.of(GenerationOptions(num_beams=2), 1)
    job = dec.submit(state_of(lm, [5, 6]), GenerationOptions(max_new_tokens=20), None)
    other = dec.submit(state_of(lm, [7, 8, 9]), GenerationOptions(max_new_tokens=6), None)
    dec.step()
    job.cancel()
    dec.run()
    assert job.done and len(job.tokens[0]) == 1 and job.finish_reasons() == ["length"]
    assert other.tokens == greedy(state_of(lm, [7, 8, 9]), 6, None)
    empty = dec.submit(state_of(lm, [5]), GenerationOptions(max_new_tokens=0), EOS)
    assert empty.done and empty.tokens == [[]]
    failing = dec.submit(state_of(lm, [5] * 66), GenerationOptions(max_new_tokens=3), EOS)
    dec.run()
    assert failing.done and "position" in str(failing.error)  # 66 tokens > 64 positions: refused alone


def test_sample_with_n_matches_the_picker(lm):
    """``sample`` and the picker: the same n rows, the same draws of the request's generator."""
    row = prompts(1, seed=12)[0]
    got = sample(state_of(lm, row), 8, EOS, n=3, top_k=10, generator=torch.Generator().manual_seed(7))
    dec = BatchDecoder()
    job = dec.submit(state_of(lm, row), GenerationOptions(max_new_tokens=8, do_sample=True, num_samples=3, top_k=10),
                     EOS, generator=torch.Generator().manual_seed(7))
    dec.run()
    assert job.tokens == got and len({tuple(r) for r in got}) > 1

"""Decoding states own their rows: every search works for every family with batches, beams and n samples.

Oracles: the same row decoded alone (batch 1, no padding), a plain full-recompute loop, the uncached
state, and HF ``generate`` for T5 batches. Conditional-LN vectors, banned ids, UniLM segment history and
the T5 bias table are all per-request state, reordered with the beams / samples."""
import pytest
import torch

from kexue.generation import beam_search, decoding_state, generate, greedy, sample, stream
from kexue.models import build_model
from generation_common import BASE, COND, EOS, V, left_pad, one_thread, peaked  # noqa: F401,E402  (autouse fixture)

@pytest.fixture(scope="module")
def unilm():
    torch.manual_seed(0)
    return peaked(build_model(BASE, application="unilm", with_mlm=True, cond_dim=COND))


@pytest.fixture(scope="module")
def rows():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(4, V, (n,), generator=g).tolist() for n in (5, 3)]


@pytest.fixture(scope="module")
def conds():
    return torch.randn(2, COND, generator=torch.Generator().manual_seed(4))


def alone(model, row, cond, run):
    return run(decoding_state(model, torch.tensor([row]), cond=None if cond is None else cond[None]))


@pytest.mark.parametrize("rule", ["hf", "bert4keras"])
def test_conditional_ln_batch2_beams3_equals_rows_alone(unilm, rows, conds, rule):
    ids, mask = left_pad(rows)
    run = lambda s: beam_search(s, 12, EOS, 3, rule=rule)  # noqa: E731
    got = run(decoding_state(unilm, ids, mask, cond=conds))
    assert got == [alone(unilm, r, c, run)[0] for r, c in zip(rows, conds)]
    swapped = run(decoding_state(unilm, ids, mask, cond=conds.flip(0)))
    assert swapped != got  # the condition reaches the model (a mis-ordered cond would be caught)
    assert got == generate(unilm, ids, mask, max_new_tokens=12, eos_id=EOS, num_beams=3, cond=conds, rule=rule)


def test_n3_samples_batch2_with_cond(unilm, rows, conds):
    ids, mask = left_pad(rows)
    # top-1 sampling is greedy: every sample equals its row decoded alone with its own condition
    got = sample(decoding_state(unilm, ids, mask, cond=conds), 10, EOS, n=3, top_k=1)
    want = [alone(unilm, r, c, lambda s: greedy(s, 10, EOS))[0] for r, c in zip(rows, conds)]
    assert got == [w for w in want for _ in range(3)] and want[0] != want[1]
    # real sampling: each token lies in the top 4 of its own row's distribution (own cond, full recompute)
    got = sample(decoding_state(unilm, ids, mask, cond=conds), 10, None, n=3, top_k=4, temperature=1.5,
                 generator=torch.Generator().manual_seed(0))
    assert len({tuple(g) for g in got}) > 2
    for i, toks in enumerate(got):
        src, cond = rows[i // 3], conds[i // 3][None]
        with torch.no_grad():
            x = torch.tensor([src + toks])
            seg = torch.tensor([[0] * len(src) + [1] * len(toks)])
            logits = unilm(x, seg, cond=cond).logits[0, len(src) - 1:-1]
        top = logits.topk(4, -1).indices
        assert (top == torch.tensor(toks)[:, None]).any(-1).all()


def test_unilm_ragged_beams_equal_rows_alone_and_stream(unilm, rows):
    ids, mask = left_pad(rows)
    run = lambda s: beam_search(s, 12, EOS, 3, num_return=2)  # noqa: E731
    got = run(decoding_state(unilm, ids, mask))
    assert got == [h for r in rows for h in alone(unilm, r, None, run)]
    streamed = torch.stack(list(stream(decoding_state(unilm, ids, mask), 8, n=2)), 1).tolist()
    assert streamed == [g for r in rows for g in alone(unilm, r, None, lambda s: greedy(s, 8)) * 2]


def test_banned_ids_never_produced(unilm, rows, conds):
    ids, mask = left_pad(rows)
    free = greedy(decoding_state(unilm, ids, mask, cond=conds), 12)
    per_row = [sorted(set(free[0]))[:3], sorted(set(free[1]))[:3]]  # tokens each row did produce
    for banned in (per_row[0] + per_row[1], per_row):
        outs = [generate(unilm, ids, mask, max_new_tokens=12, cond=conds, banned_ids=banned),
                generate(unilm, ids, mask, max_new_tokens=12, cond=conds, banned_ids=banned, num_beams=3,
                         num_return=3),
                generate(unilm, ids, mask, max_new_tokens=12, cond=conds, banned_ids=banned, do_sample=True, n=3,
                         generator=torch.Generator().manual_seed(0))]
        for out in outs:
            per = len(out) // 2
            for i, toks in enumerate(out):
                ban = banned if isinstance(banned[0], int) else banned[i // per]
                assert not set(toks) & set(ban)


def family_models():
    torch.manual_seed(1)
    yield "bert-unilm-cond", peaked(build_model(BASE, application="unilm", with_mlm=True, cond_dim=COND)), True
    yield "roformer-lm", peaked(build_model(dict(BASE, model_type="roformer"), application="lm", with_mlm=True)), False
    yield "roformer_v2-unilm", peaked(build_model(BASE, family="roformer_v2", application="unilm", with_mlm=True),
                                      40.0), False
    yield "gpt", peaked(build_model(dict(BASE, hidden_act="gelu_new"), family="gpt")), False


def test_cached_equals_uncached_every_family(rows, conds):
    from test_generation_t5 import hf_pair
    searches = [lambda s: greedy(s, 10, EOS), lambda s: beam_search(s, 10, EOS, 3, num_return=2),
                lambda s: beam_search(s, 10, EOS, 3, rule="bert4keras", min_ends=2),
                lambda s: sample(s, 10, EOS, n=2, top_k=5, generator=torch.Generator().manual_seed(0)),
                lambda s: sample(s, 10, EOS, 3, n=2, top_p=0.9, rule="bert4keras", min_ends=2,
                                 generator=torch.Generator().manual_seed(0))]
    ids, mask = left_pad(rows)
    for name, model, with_cond in family_models():
        kw = dict(cond=conds if with_cond else None, banned_ids=[5, 6])
        for run in searches:
            cached = run(decoding_state(model, ids, mask, **kw))
            assert cached == run(decoding_state(model, ids, mask, use_cache=False, **kw)), name
    _, t5 = hf_pair("t5v1_1", seed=2)
    right = torch.tensor([[5, 9, 11, 40, 7], [8, 21, 4, 0, 0]])
    rmask = (right > 0).long()
    for run in searches + [lambda s: greedy(s, 70)]:  # 70 steps: the bias table grows past its first 64
        assert run(decoding_state(t5, right, rmask)) == run(decoding_state(t5, right, rmask, use_cache=False))


def test_t5_batch2_beams_equal_hf_generate():
    transformers = pytest.importorskip("transformers")  # noqa: F841
    from test_generation_t5 import hf_pair
    hf, ours = hf_pair("t5v1_1", seed=5, num_decoder_layers=2)
    with torch.no_grad():
        for m in (hf, ours):
            m.lm_head.weight.mul_(6.0)
            m.lm_head.weight[1].mul_(3.0)
    ids = torch.tensor([[5, 9, 11, 40, 7, 13], [8, 21, 4, 0, 0, 0]])
    mask = (ids > 0).long()
    settings = dict(max_new_tokens=10, min_new_tokens=1, num_beams=3)
    ref = hf.generate(ids, attention_mask=mask, num_return_sequences=2, do_sample=False, eos_token_id=1,
                      pad_token_id=0, decoder_start_token_id=0, length_penalty=1.0, early_stopping=False, **settings)
    want = []
    for row in ref[:, 1:].tolist():
        want.append(row[: row.index(1)] if 1 in row else row)
    assert generate(ours, ids, mask, eos_id=1, num_return=2, **settings) == want


# ---- bad arguments -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return build_model(BASE, application="lm", with_mlm=True, cond_dim=COND).eval()


IDS = torch.tensor([[5, 6, 7], [8, 9, 10]])
BAD = [
    (dict(do_sample=True, temperature=0), "temperature"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(do_sample=True, top_k=-1), "top_k"),
    (dict(do_sample=True, top_p=0.0), "top_p"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, n=0), "n"),
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=2, num_return=3), "num_return"),
    (dict(eos_id=V), "eos_id"),
    (dict(eos_id=-1), "eos_id"),
    (dict(max_new_tokens=3, min_new_tokens=5), "min_new_tokens"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(cond=torch.zeros(3, COND)), "cond"),
    (dict(cond=torch.zeros(2, COND + 1)), "cond"),
    (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "input_ids"),
    (dict(attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]])), "attention_mask"),
    (dict(attention_mask=torch.ones(2, 4, dtype=torch.long)), "attention_mask"),
    (dict(segment_ids=torch.zeros(2, 2, dtype=torch.long)), "segment_ids"),
    (dict(input_ids=torch.tensor([[5, -1]])), "input_ids"),
    (dict(banned_ids=[V]), "banned_ids"),
    (dict(num_beams=2, top_k=3), "top_k"),
    (dict(num_beams=2, rule="beam"), "rule"),
    (dict(num_beams=2, rule="bert4keras", length_penalty=2.0), "length_penalty"),
    (dict(num_beams=2, rule="bert4keras", min_ends=0), "min_ends"),
    (dict(num_beams=2, min_ends=2), "min_ends"),
    (dict(do_sample=True, num_beams=2), "do_sample"),
]


@pytest.mark.parametrize("kwargs,name", BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_generate_refuses_bad_arguments_by_name(lm, kwargs, name):
    kwargs = dict(kwargs)
    ids = kwargs.pop("input_ids", IDS)
    calls = []
    hook = lm.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=name):
            generate(lm, ids, **{"max_new_tokens": 4, **kwargs})
    finally:
        hook.remove()
    assert not calls  # refused before the model ran


@pytest.mark.parametrize("call,name", [
    (lambda s: greedy(s, 4, eos_id=V), "eos_id"),
    (lambda s: sample(s, 4, temperature=0.0), "temperature"),
    (lambda s: sample(s, 4, top_p=2.0), "top_p"),
    (lambda s: sample(s, 4, n=0), "n"),
    (lambda s: beam_search(s, 4, num_beams=0), "num_beams"),
    (lambda s: beam_search(s, 4, num_beams=2, num_return=3), "num_return"),
    (lambda s: beam_search(s, 2, min_new_tokens=3), "min_new_tokens"),
    (lambda s: list(stream(s, 4, top_k=-2)), "top_k"),
])
def test_searches_refuse_bad_arguments_by_name(lm, call, name):
    with pytest.raises(ValueError, match=name):
        call(decoding_state(lm, IDS))


def test_zero_new_tokens_returns_empty_without_running_the_model(lm):
    calls = []
    hook = lm.register_forward_hook(lambda *a: calls.append(1))
    try:
        assert generate(lm, IDS, max_new_tokens=0) == [[], []]
        assert generate(lm, IDS, max_new_tokens=0, do_sample=True, n=3) == [[]] * 6
        assert generate(lm, IDS, max_new_tokens=0, num_beams=3, num_return=2) == [[]] * 4
        assert generate(lm, IDS, max_new_tokens=0, num_beams=3, rule="bert4keras") == [[], []]
        assert list(stream(decoding_state(lm, IDS), 0)) == []
        assert not calls
        assert len(generate(lm, IDS, max_new_tokens=2)[0]) == 2 and calls  # the hook does see a real run
    finally:
        hook.remove()


def test_prefill_runs_the_head_on_the_last_column_only(unilm, rows):
    """The vocabulary head sees one position per row over a prompt ([B, V] logits, not [B, L, V]), and the
    first logits equal the last column of a full forward pass."""
    ids, mask = left_pad(rows)
    segs = torch.zeros_like(ids)
    shapes = []
    hook = unilm.register_forward_hook(lambda m, args, out: shapes.append(tuple(out.logits.shape)))
    try:
        first = decoding_state(unilm, ids, attention_mask=mask, segment_ids=segs).prefill()
    finally:
        hook.remove()
    assert shapes == [(ids.shape[0], V)]
    with torch.no_grad():
        full = unilm(ids, segs, mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits[:, -1]
    torch.testing.assert_close(first, full, rtol=0, atol=1e-5)

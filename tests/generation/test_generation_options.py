"""GenerationOptions: one typed list of the generation options. Every field refuses each bad value by
name, an option the chosen search would ignore is refused by name, text (the command line, JSON) is
read by the field, and ``generate(**kw)`` is ``generate(options=GenerationOptions(**kw))`` token for
token (oracle: the search functions called directly on a fresh decoding state)."""
import dataclasses
import math

import pytest
import torch

from kexue.generation import (GenerationOptions, beam_search, check_args, decoding_state, generate, greedy,
                              sample)
from kexue.models import build_model
from generation_common import one_thread  # noqa: F401,E402  (autouse fixture)

V, EOS = 40, 3
IDS = torch.tensor([[5, 6, 7], [8, 9, 10]])

# Bad values of every field (each must be refused with a one-line ValueError naming the field).
BAD_VALUES = {
    "max_new_tokens": [-1, 2.0, True, "3", None],
    "min_new_tokens": [-1, 1.5, None],
    "num_beams": [0, -2, 2.0, False],
    "do_sample": [1, "yes", None],
    "num_samples": [0, 1.0, None],
    "temperature": [0, -1.0, math.inf, math.nan, True, "1"],
    "top_k": [-1, 2.5, "3", True],
    "top_p": [0, 0.0, 1.5, -0.1, math.nan, "0.9"],
    "seed": [-1, 1.0, "0", True],
    "length_penalty": [math.inf, math.nan, "x", None],
    "early_stopping": ["sometimes", 1, None],
    "min_ends": [0, 1.5],
    "rule": ["beam", "HF", None],
}


def test_every_field_has_bad_values_listed():
    assert set(BAD_VALUES) == set(GenerationOptions.names())


@pytest.mark.parametrize("name,value", [(n, v) for n, vs in BAD_VALUES.items() for v in vs],
                         ids=[f"{n}={v!r}" for n, vs in BAD_VALUES.items() for v in vs])
def test_each_bad_value_is_refused_naming_the_field(name, value):
    with pytest.raises(ValueError) as e:
        GenerationOptions(**{name: value})
    message = str(e.value)
    assert message.startswith(f"{name}=") and "\n" not in message, message
    with pytest.raises(ValueError, match=f"^{name}="):  # the searches' own argument check is the same check
        check_args(**{name: value})


@pytest.mark.parametrize("kwargs,name", [
    (dict(num_beams=2, top_k=3), "top_k"),
    (dict(num_beams=2, seed=1), "seed"),
    (dict(num_beams=2, temperature=0.5), "temperature"),  # only rule='bert4keras' beam search takes it
    (dict(num_beams=2, min_ends=2), "min_ends"),
    (dict(num_beams=2, rule="bert4keras", length_penalty=0.5), "length_penalty"),
    (dict(num_beams=2, rule="bert4keras", num_samples=2), "num_samples"),
    (dict(num_beams=2, num_samples=3), "num_samples"),
    (dict(do_sample=True, length_penalty=2.0), "length_penalty"),
    (dict(do_sample=True, early_stopping=True), "early_stopping"),
    (dict(do_sample=True, min_ends=2), "min_ends"),
    (dict(top_k=5), "top_k"),  # greedy decoding takes no sampling option
    (dict(temperature=0.7), "temperature"),
    (dict(num_samples=2), "num_samples"),
    (dict(rule="bert4keras", length_penalty=0.5), "length_penalty"),  # greedy + bert4keras: topk=1 beam search
    (dict(do_sample=True, num_beams=2), "do_sample"),
    (dict(max_new_tokens=3, min_new_tokens=4), "min_new_tokens"),
])
def test_options_a_search_would_ignore_are_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        GenerationOptions(**kwargs)


def test_good_options_are_kept_and_frozen():
    o = GenerationOptions(do_sample=True, num_samples=3, temperature=0.7, top_k=0, top_p=0.9, seed=4)
    assert (o.search, o.num_samples, o.top_k, o.seed) == ("sampling", 3, 0, 4)
    assert GenerationOptions(num_beams=4, num_samples=4, length_penalty=0.0, early_stopping="never").search == "beam search"
    assert GenerationOptions(num_beams=3, rule="bert4keras", temperature=0.5, min_ends=2).search == "beam search"
    assert GenerationOptions(do_sample=True, rule="bert4keras", min_ends=2).search == "sampling"
    assert GenerationOptions().search == "greedy decoding" and GenerationOptions(max_new_tokens=0).max_new_tokens == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.top_k = 3
    with pytest.raises(ValueError, match="^top_p="):  # replace() checks again
        dataclasses.replace(o, top_p=2.0)


@pytest.mark.parametrize("name,text,value", [
    ("max_new_tokens", "12", 12), ("num_beams", "4", 4), ("num_samples", "2", 2), ("temperature", "0.5", 0.5),
    ("top_k", "0", 0), ("top_p", "1", 1.0), ("seed", "7", 7), ("do_sample", "true", True),
    ("early_stopping", "never", "never"), ("rule", "bert4keras", "bert4keras"), ("length_penalty", "-1", -1.0),
])
def test_text_is_read_by_the_field(name, text, value):
    got = GenerationOptions.parse(name, text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("name,text", [("top_k", "x"), ("top_k", "2.5"), ("top_p", "1.5"), ("temperature", "0"),
                                       ("temperature", "inf"), ("seed", "-1"), ("num_beams", "0"), ("do_sample", "2"),
                                       ("max_new_tokens", "-3")])
def test_bad_text_is_refused_naming_the_field(name, text):
    with pytest.raises(ValueError, match=f"^{name}="):
        GenerationOptions.parse(name, text)


def test_fields_own_their_flag_and_help():
    for f in dataclasses.fields(GenerationOptions):
        assert GenerationOptions.help(f.name) and GenerationOptions.default(f.name) == f.default
        assert GenerationOptions.flag(f.name) == "--" + f.name.replace("_", "-")
    assert set(GenerationOptions.user_options()) == {"max_new_tokens", "num_beams", "num_samples", "temperature",
                                                     "top_k", "top_p", "seed"}
    with pytest.raises(ValueError, match="^topk: not a generation option"):
        GenerationOptions.parse("topk", "3")


# ---- generate(**kw) == generate(options=GenerationOptions(**kw)) --------------------------------------------
@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    model = build_model(dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0), application="lm", with_mlm=True).eval()
    with torch.no_grad():
        model.embeddings.token.weight.mul_(20.0)  # peaked outputs, so the searches disagree
        model.embeddings.token.weight[EOS].mul_(1.8)  # and some rows end (min_new_tokens then matters)
    return model


CASES = [
    dict(max_new_tokens=8),
    dict(max_new_tokens=8, min_new_tokens=3),
    dict(max_new_tokens=8, do_sample=True, seed=1, num_samples=3),
    dict(max_new_tokens=8, do_sample=True, seed=2, top_k=5, top_p=0.8, temperature=1.5),
    dict(max_new_tokens=8, do_sample=True, seed=3, rule="bert4keras", min_ends=2),
    dict(max_new_tokens=8, num_beams=3, num_samples=2),
    dict(max_new_tokens=8, num_beams=3, num_samples=3, length_penalty=0.0, early_stopping=True),
    dict(max_new_tokens=8, num_beams=3, rule="bert4keras", temperature=0.7),
    dict(max_new_tokens=0, num_beams=2),
]


def direct(lm, kw):
    """The oracle: the search function that ``kw`` names, called with its own arguments."""
    state, o = decoding_state(lm, IDS), GenerationOptions(**kw)
    if o.num_beams > 1:
        return beam_search(state, o.max_new_tokens, EOS, o.num_beams, o.min_new_tokens, o.length_penalty,
                           o.early_stopping, o.num_samples, o.rule, o.temperature, o.min_ends)
    if o.do_sample:
        return sample(state, o.max_new_tokens, EOS, o.min_new_tokens, n=o.num_samples, temperature=o.temperature,
                      top_k=o.top_k, top_p=o.top_p, generator=torch.Generator().manual_seed(o.seed), rule=o.rule,
                      min_ends=o.min_ends)
    return greedy(state, o.max_new_tokens, EOS, o.min_new_tokens)


@pytest.mark.parametrize("kw", CASES, ids=[",".join(f"{k}={v}" for k, v in c.items()) for c in CASES])
def test_keywords_and_options_object_decode_the_same_tokens(lm, kw):
    by_keywords = generate(lm, IDS, eos_id=EOS, **kw)
    by_object = generate(lm, IDS, eos_id=EOS, options=GenerationOptions(**kw))
    assert by_keywords == by_object == direct(lm, kw)
    rows = IDS.shape[0] * (GenerationOptions(**kw).num_samples if kw.get("rule") != "bert4keras" else 1)
    assert len(by_keywords) == rows


def test_the_cases_differ(lm):
    """The equality above is not vacuous: the searches give different tokens, and some rows end early."""
    outs = [generate(lm, IDS, eos_id=EOS, **kw) for kw in CASES[:-1]]
    assert len({str(o) for o in outs}) == len(outs)
    assert any(len(row) < 8 for o in outs for row in o)


def test_seed_is_a_fresh_generator_and_global_rng_is_the_default(lm):
    kw = dict(max_new_tokens=8, do_sample=True, num_samples=2, top_k=8)
    seeded = generate(lm, IDS, eos_id=EOS, seed=5, **kw)
    assert seeded == generate(lm, IDS, eos_id=EOS, generator=torch.Generator().manual_seed(5), **kw)
    torch.manual_seed(11)
    first = generate(lm, IDS, eos_id=EOS, **kw)
    torch.manual_seed(11)
    assert first == generate(lm, IDS, eos_id=EOS, options=GenerationOptions(**kw))
    with pytest.raises(ValueError, match="seed"):
        generate(lm, IDS, seed=5, generator=torch.Generator(), **kw)
    with pytest.raises(ValueError, match="^generator"):
        generate(lm, IDS, max_new_tokens=4, generator=torch.Generator())


def test_search_functions_names_and_option_overrides(lm):
    """``n`` / ``num_return`` are ``num_samples`` in their own search only; keywords replace the fields of
    ``options``; an unknown keyword is refused by name, before the model runs."""
    kw = dict(max_new_tokens=6, eos_id=EOS)
    assert generate(lm, IDS, do_sample=True, seed=0, n=3, **kw) == generate(lm, IDS, do_sample=True, seed=0,
                                                                            num_samples=3, **kw)
    assert generate(lm, IDS, num_beams=3, num_return=2, **kw) == generate(lm, IDS, num_beams=3, num_samples=2, **kw)
    base = GenerationOptions(num_beams=3, max_new_tokens=8)
    assert generate(lm, IDS, eos_id=EOS, options=base, max_new_tokens=6) == \
        generate(lm, IDS, eos_id=EOS, options=dataclasses.replace(base, max_new_tokens=6))
    calls = []
    hook = lm.register_forward_hook(lambda *a: calls.append(1))
    try:
        for bad, name in [(dict(topk=3), "topk"), (dict(num_beams=3, n=2), "n"), (dict(do_sample=True, num_return=2),
                          "num_return"), (dict(n=2, num_samples=2), "n"), (dict(num_beams=2, num_return=3), "num_return")]:
            with pytest.raises(ValueError, match=f"^{name}"):
                generate(lm, IDS, **bad)
    finally:
        hook.remove()
    assert not calls
    with pytest.raises(TypeError):  # max_new_tokens is a keyword, never the 5th positional argument
        generate(lm, IDS, None, None, 4)

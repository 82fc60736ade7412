"""The OpenAI-compatible routes of ``kexue serve``: what RAG front-ends, agents and the official ``openai``
client call.

* ``GET /v1/models`` (and ``/v1/models/{id}``): the one model served, named ``--served-model-name`` or
  its folder's name;
* ``POST /v1/embeddings`` (encoder folders): ``input`` a text or a list of texts, ``encoding_format``
  ``float`` or ``base64`` (little-endian float32, the client's default), ``usage`` in tokens; the
  vectors are ``kexue.load(DIR).predict``'s (L2-normalised mean pooling). ``dimensions`` is accepted only
  when it is the model's own size (no truncation is done);
* ``POST /v1/chat/completions`` (dialogue and generation folders): ``messages`` become the model's input
  (a dialogue: the user / assistant turns, alternating, ending with the user's; a generator: one user
  message, its text); ``POST /v1/completions``: ``prompt`` a text or a list (a dialogue reads each as one
  turn). Both stream with ``stream: true`` (server-sent events, one chunk per decoding step,
  ``data: [DONE]`` last); the streamed text is the non-streamed text, chunk by chunk.

Request fields map onto :class:`kexue.generation.GenerationOptions`: ``max_tokens`` /
``max_completion_tokens`` -> ``max_new_tokens``, ``n`` -> ``num_samples``, ``temperature`` (0: the most
likely token at every step, ``top_k=1``), ``top_p``, ``seed``; ``stop`` (up to 4 strings) cuts each text
before the first one (finish reason ``stop``); kexue's own ``top_k`` and ``num_beams`` are taken too.
An unset option keeps the model folder's own setting, as ``kexue predict`` does (a dialogue folder
samples with its saved top-k and seed 0; a generator decodes greedily), so a completion equals
``kexue.load(DIR).predict``. Other OpenAI fields are accepted only at their neutral value
(``frequency_penalty: 0``, ``logprobs: false``, ``tools: []`` …); anything else, and any unknown field,
is refused by name with OpenAI's error object (``{"error": {"message", "type", "param", "code"}}``),
which the client raises as ``BadRequestError``.
"""

import asyncio
import base64
import json
import time
import uuid
from typing import Any

from kexue.generation import decode_state

ROLES = ("user", "assistant")
# OpenAI fields kexue has no counterpart for, with the values that ask for nothing (accepted as such)
NEUTRAL: dict[str, tuple] = {
    "frequency_penalty": (0, 0.0, None), "presence_penalty": (0, 0.0, None), "logprobs": (False, None),
    "top_logprobs": (None, 0), "logit_bias": (None, {}), "tools": (None, []), "tool_choice": (None, "none"),
    "functions": (None, []), "function_call": (None, "none"), "parallel_tool_calls": (None, True, False),
    "response_format": (None, {"type": "text"}), "service_tier": (None, "auto", "default"), "store": (None, False),
    "metadata": (None, {}), "modalities": (None, ["text"]), "echo": (None, False), "suffix": (None, ""),
}
CHAT_FIELDS = {"model", "messages", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens",
               "temperature", "top_p", "seed", "stop", "top_k", "num_beams", "user"}
COMPLETION_FIELDS = CHAT_FIELDS - {"messages", "max_completion_tokens"} | {"prompt", "best_of"}
EMBEDDING_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}


class OpenAIError(Exception):
    """A refused request: OpenAI's error object with ``status``."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.code, self.kind = message, param, status, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def error_body(message: str, status: int = 400, code: str | None = None, param: str | None = None) -> dict:
    return OpenAIError(message, param, status, code).body()


# --------------------------------------------------------------------------------------------------
# Reading a request
# --------------------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_fields(body: dict, allowed: set[str]) -> None:
    for name, value in body.items():
        if name in allowed:
            continue
        if name in NEUTRAL:
            if value not in NEUTRAL[name]:
                shown = ", ".join(json.dumps(v) for v in NEUTRAL[name])
                raise OpenAIError(f"{name}={json.dumps(value)}: not supported by kexue models (accepted: {shown})",
                                  name, code="unsupported_parameter")
            continue
        raise OpenAIError(f"Unrecognized request argument supplied: {name}", name, code="unrecognized_argument")


def _check_model(body: dict, served: str) -> None:
    model = body.get("model")
    if not isinstance(model, str):
        raise OpenAIError("model: a string naming the model is required (GET /v1/models lists it)", "model")
    if model != served:
        raise OpenAIError(f"The model '{model}' does not exist; this server serves '{served}'", "model", 404,
                          "model_not_found")


def _check_user(body: dict) -> None:
    if "user" in body and not isinstance(body["user"], str):
        raise OpenAIError("user: must be a string", "user")


def generation_options(body: dict, predictor, limits) -> tuple[dict[str, Any], dict[str, str]]:
    """The request's generation fields as kexue options (checked by the predictor's own check, each error
    naming the OpenAI field), and the request field of each option."""
    given: dict[str, tuple[str, Any]] = {}  # kexue option -> (request field, value)
    tokens = [f for f in ("max_tokens", "max_completion_tokens") if body.get(f) is not None]
    if len(tokens) == 2 and body["max_tokens"] != body["max_completion_tokens"]:
        raise OpenAIError("max_tokens and max_completion_tokens differ: give one", "max_tokens")
    if tokens:
        given["max_new_tokens"] = (tokens[0], body[tokens[0]])
    for field, option in (("n", "num_samples"), ("top_p", "top_p"), ("seed", "seed"), ("top_k", "top_k"),
                          ("num_beams", "num_beams")):
        if body.get(field) is not None:
            given[option] = (field, body[field])
    if given.get("num_samples", ("n", 1))[1] == 1 and "num_samples" in given:
        del given["num_samples"]  # n=1 is every task's own
    t = body.get("temperature")
    if t is not None:
        if not _is_number(t) or not 0 <= t <= 2:
            raise OpenAIError(f"temperature={json.dumps(t)}: must be a number in [0, 2]", "temperature")
        if t == 0:
            if "top_k" in given and given["top_k"][1] != 1:
                raise OpenAIError("temperature=0 (the most likely token) and top_k: give one", "temperature")
            given["top_k"] = ("temperature", 1)
        else:
            given["temperature"] = ("temperature", t)
    options = {}
    for option, (field, value) in given.items():
        if option not in predictor.options:
            why = ("a dialogue model gives one reply per request" if field == "n" and predictor.task == "dialogue"
                   else f"{predictor.task} models take {', '.join(sorted(predictor.options)) or 'no options'}")
            raise OpenAIError(f"{field}={json.dumps(value)}: not supported ({why})", field, code="unsupported_parameter")
        if not _is_number(value):
            raise OpenAIError(f"{field}={json.dumps(value)}: must be a number", field)
        try:
            options.update(predictor.check_options({option: value}))
        except ValueError as e:
            raise OpenAIError(f"{field}: {e}", field) from None
    fields = {o: f for o, (f, _) in given.items()}
    limits.check_options(options, fields, OpenAIError)
    return options, fields


def _stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not 1 <= len(stops) <= 4 or not all(isinstance(s, str) and s for s in stops):
        raise OpenAIError("stop: a non-empty string or a list of 1 to 4 non-empty strings", "stop")
    return stops


def _stream_flags(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise OpenAIError("stream: must be true or false", "stream")
    so = body.get("stream_options")
    if so is None:
        return stream, False
    if not stream:
        raise OpenAIError("stream_options: only with stream=true", "stream_options")
    if not isinstance(so, dict) or set(so) - {"include_usage"} or not isinstance(so.get("include_usage", False), bool):
        raise OpenAIError('stream_options: {"include_usage": true|false}', "stream_options")
    return stream, so.get("include_usage", False)


def _content(message: dict, where: str) -> str:
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise OpenAIError(f"{where}.content[{j}]: only text parts are supported", f"{where}.content")
            parts.append(part["text"])
        content = " ".join(parts)
    if not isinstance(content, str) or not content.strip():
        raise OpenAIError(f"{where}.content: a non-empty text is required", f"{where}.content")
    return content


def chat_input(body: dict, predictor) -> Any:
    """``messages`` as the model's input: a dialogue's turns, or a generator's one text."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError("messages: a non-empty list of {role, content} objects is required", "messages")
    turns = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise OpenAIError(f"{where}: must be an object with role and content", where)
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise OpenAIError(f"{where}.{extra[0]}: not supported (a message is role and content)", f"{where}.{extra[0]}")
        role = m.get("role")
        if role not in ROLES:
            raise OpenAIError(f"{where}.role={json.dumps(role)}: kexue {predictor.task} models read user and "
                              "assistant turns only (no system, developer or tool messages)", f"{where}.role")
        if turns and turns[-1][0] == role:
            raise OpenAIError(f"{where}: two {role} messages in a row; the turns must alternate user and assistant",
                              "messages")
        turns.append((role, _content(m, where)))
    if turns[-1][0] != "user":
        raise OpenAIError("messages: the last message must be the user's (the model writes the assistant's reply)",
                          "messages")
    if predictor.task == "dialogue":
        return [t for _, t in turns]
    if len(turns) != 1:
        raise OpenAIError(f"messages: a {predictor.task} model continues one text: send one user message", "messages")
    return turns[0][1]


def completion_inputs(body: dict, predictor, limits) -> list:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise OpenAIError("prompt: a non-empty text or a list of them (token-id arrays are not supported)", "prompt")
    limits.check_inputs(len(prompts), "prompt", OpenAIError)
    if body.get("best_of") not in (None, 1, body.get("n", 1)):
        raise OpenAIError(f"best_of={json.dumps(body['best_of'])}: not supported (only best_of = n)", "best_of")
    return [[p] if predictor.task == "dialogue" else p for p in prompts]


# --------------------------------------------------------------------------------------------------
# Running: the texts of every choice, step by step
# --------------------------------------------------------------------------------------------------
class Choice:
    """One returned text: a row of one input's decoding, cut at the first stop string."""

    def __init__(self, index: int, stops: list[str]):
        self.index, self.stops = index, stops
        self.text, self.sent, self.reason = "", 0, None  # reason set once final
        self.tokens = 0

    def update(self, text: str, tokens: int, final_reason: str | None) -> str:
        """Take the row's text so far; return the new text safe to send (nothing a stop string could cut)."""
        if self.reason is not None:
            return ""
        self.tokens = tokens
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            text, final_reason = text[:cut], "stop"
        self.text = text
        if final_reason is not None:
            self.reason = final_reason
            safe = len(text)
        else:  # hold back a tail that may be the start of a stop string
            hold = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            safe = len(text) - hold
        delta = text[self.sent:safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return delta


async def run_choices(ctx, decodings: list, n: int, stops: list[str]):
    """Yield ``(choice, delta)`` as tokens arrive (``delta`` may be "" when a choice just finished); every
    choice ends with its ``reason`` set. Greedy decoding and sampling decode in the shared engine; beam
    search runs alone in a worker thread and arrives in one piece."""
    choices = [Choice(i * n + j, stops) for i in range(len(decodings)) for j in range(n)]
    if any(d.options.num_beams > 1 for d in decodings):
        for i, d in enumerate(decodings):
            rows = await asyncio.to_thread(decode_state, d.state, d.options, d.eos_id)
            for j, row in enumerate(rows):
                c = choices[i * n + j]
                reason = "length" if len(row) >= d.options.max_new_tokens else "stop"
                yield c, c.update(d.text(row), len(row), reason)
        return
    gens = ctx.engine.submit(decodings, owner=object())
    waiters: dict = {}
    try:
        waiters.update({asyncio.ensure_future(g.updates.get()): i for i, g in enumerate(gens)})
        while waiters:
            finished, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in finished:
                i = waiters.pop(w)
                g, d = gens[i], decodings[i]
                if g.error is not None:
                    raise g.error
                # one snapshot: the engine thread may finish between reading its rows and its state; a row read
                # before the end is re-read at the final update (waited for below), never taken as final
                done = g.done
                rows = [list(r) for r in g.tokens]
                reasons = g.finish_reasons() if done else [None] * len(rows)
                for j, row in enumerate(rows):
                    c = choices[i * n + j]
                    was = c.reason
                    delta = c.update(d.text(row), len(row), reasons[j])
                    if delta or (c.reason is not None and was is None):
                        yield c, delta
                if done:
                    continue
                if all(choices[i * n + j].reason is not None for j in range(len(rows))) and rows:
                    ctx.engine.cancel([g])  # every row of this input hit a stop string: stop decoding it
                    continue
                waiters[asyncio.ensure_future(g.updates.get())] = i
    finally:  # done, failed, or the client went away: nothing of this request goes on decoding
        ctx.engine.cancel(gens)
        for w in waiters:
            w.cancel()


# --------------------------------------------------------------------------------------------------
# The routes
# --------------------------------------------------------------------------------------------------
def add_routes(app, ctx) -> None:
    """Add the ``/v1`` routes to ``app``; ``ctx``: the served predictor, its name, batcher, engine and limits."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, StreamingResponse

    predictor, served = ctx.predictor, ctx.served_name
    generates = predictor.task in ("dialogue", "generate")

    def model_card() -> dict:
        return {"id": served, "object": "model", "created": ctx.created, "owned_by": "kexue"}

    async def read(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise OpenAIError("We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise OpenAIError("the request body must be a JSON object")
        return body

    def fail(e: Exception) -> JSONResponse:
        if not isinstance(e, OpenAIError):
            e = OpenAIError(str(e))
        return JSONResponse(status_code=e.status, content=e.body())

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != served:
            return fail(OpenAIError(f"The model '{model_id}' does not exist", "model", 404, "model_not_found"))
        return model_card()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        try:
            body = await read(request)
            _check_fields(body, EMBEDDING_FIELDS)
            _check_model(body, served)
            _check_user(body)
            if not hasattr(predictor, "embed"):
                raise OpenAIError(f"{served} is a {predictor.task} model: /v1/embeddings needs an encoder", "model")
            texts = body.get("input")
            texts = [texts] if isinstance(texts, str) else texts
            if not isinstance(texts, list) or not texts:
                raise OpenAIError("input: a text or a non-empty list of texts is required", "input")
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise OpenAIError(f"input[{i}]: token-id arrays are not supported; send text", "input")
                if not t:
                    raise OpenAIError(f"input[{i}]: an empty string cannot be embedded", "input")
            ctx.limits.check_inputs(len(texts), "input", OpenAIError)
            fmt = body.get("encoding_format") or "float"
            if fmt not in ("float", "base64"):
                raise OpenAIError(f"encoding_format={json.dumps(fmt)}: float or base64", "encoding_format")
            dim = predictor.encoder.config.hidden_size
            dims = body.get("dimensions")
            if dims is not None and dims != dim:
                raise OpenAIError(f"dimensions={json.dumps(dims)}: not supported; this model gives {dim}-dimensional "
                                  "vectors (no truncation)", "dimensions", code="unsupported_parameter")
            vectors = await ctx.batcher.submit(texts, kind="embed")
        except Exception as e:  # noqa: BLE001 - every refusal is an OpenAI error object
            return fail(e)
        tokens = sum(len(predictor.tokenizer.encode(t, maxlen=predictor.maxlen)[0]) for t in texts)
        data = [{"object": "embedding", "index": i,
                 "embedding": (base64.b64encode(v.float().numpy().astype("<f4").tobytes()).decode("ascii")
                               if fmt == "base64" else v.float().tolist())} for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": served,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def generate(request: Request, chat: bool):
        if not generates:
            raise OpenAIError(f"{served} is a {predictor.task} model: {request.url.path} needs a dialogue or "
                              "generation model", "model")
        body = await read(request)
        _check_fields(body, CHAT_FIELDS if chat else COMPLETION_FIELDS)
        _check_model(body, served)
        _check_user(body)
        stream, include_usage = _stream_flags(body)
        stops = _stops(body)
        inputs = [chat_input(body, predictor)] if chat else completion_inputs(body, predictor, ctx.limits)
        options, fields = generation_options(body, predictor, ctx.limits)
        try:
            items = [predictor.check(x) for x in inputs]
            decodings = predictor.decodings(items, **options)
        except ValueError as e:  # the task's own limits: name the request field behind the option
            field = next((f for o, f in fields.items() if o in str(e)), None)
            shown = f"{field}={json.dumps(body[field])}: " if field else ""
            raise OpenAIError(shown + str(e), field) from None
        n = decodings[0].options.num_samples
        return body, stream, include_usage, stops, decodings, n

    def usage(decodings, choices) -> dict:
        prompt = sum(d.prompt_tokens for d in decodings)
        done = sum(c.tokens for c in choices)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    async def respond(request: Request, chat: bool):
        try:
            body, stream, include_usage, stops, decodings, n = await generate(request, chat)
        except Exception as e:  # noqa: BLE001
            return fail(e)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        if not stream:
            choices = {}
            try:
                async for c, _ in run_choices(ctx, decodings, n, stops):
                    choices[c.index] = c
            except Exception as e:  # noqa: BLE001
                return fail(e)
            out = []
            for c in sorted(choices.values(), key=lambda c: c.index):
                if chat:
                    out.append({"index": c.index, "message": {"role": "assistant", "content": c.text},
                                "finish_reason": c.reason, "logprobs": None})
                else:
                    out.append({"index": c.index, "text": c.text, "finish_reason": c.reason, "logprobs": None})
            return {"id": rid, "object": obj, "created": created, "model": served, "choices": out,
                    "usage": usage(decodings, choices.values())}

        def chunk(choices: list[dict], **extra) -> str:
            obj_chunk = "chat.completion.chunk" if chat else "text_completion"
            payload = {"id": rid, "object": obj_chunk, "created": created, "model": served, "choices": choices,
                       **extra}
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        async def events():
            seen: dict[int, Choice] = {}
            try:
                if chat:
                    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                                  "logprobs": None} for i in range(len(decodings) * n)])
                async for c, delta in run_choices(ctx, decodings, n, stops):
                    seen[c.index] = c
                    if delta:
                        yield chunk([{"index": c.index, "delta": {"content": delta}, "finish_reason": None,
                                      "logprobs": None} if chat else
                                     {"index": c.index, "text": delta, "finish_reason": None, "logprobs": None}])
                    if c.reason is not None:
                        yield chunk([{"index": c.index, "delta": {}, "finish_reason": c.reason, "logprobs": None}
                                     if chat else
                                     {"index": c.index, "text": "", "finish_reason": c.reason, "logprobs": None}])
                if include_usage:
                    yield chunk([], usage=usage(decodings, seen.values()))
            except Exception as e:  # noqa: BLE001 - headers are sent: the error is the last event
                yield f"data: {json.dumps(OpenAIError(str(e), kind='server_error').body())}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await respond(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await respond(request, chat=False)


__all__ = ["OpenAIError", "add_routes", "chat_input", "error_body", "generation_options"]

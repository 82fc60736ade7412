"""The use commands over a saved model folder: ``kexue predict`` (JSON lines out), ``kexue chat`` (a dialogue
on stdin), ``kexue embed`` (sentence vectors) and ``kexue search`` (nearest sentences of a corpus). Each
reads the folder through :func:`kexue.load`, so it runs the same code as the recipe's own evaluation."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from kexue.generation import GenerationOptions
from kexue.io import write_text
from kexue.recipes import args as at
from kexue.recipes.predictor import Predictor, load


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def parse_input(line: str) -> Any:
    """A JSON value if the line is one (object, list or quoted string), else the line as text."""
    s = line.strip()
    if s[:1] in "{[\"":
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            pass
    return line.rstrip("\r\n")



def read_inputs(texts: list[str], path: str | None) -> list[Any]:
    items = [parse_input(t) for t in texts]
    if path:
        lines = Path(path).read_text(encoding="utf-8").splitlines() if path != "-" else sys.stdin.read().splitlines()
        items += [parse_input(ln) for ln in lines if ln.strip()]
    if not items:
        raise at.UsageError("no inputs: give TEXT arguments or --input FILE (- for stdin)")
    return items



def write_lines(rows: Iterable[dict], path: str | None) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path:
        write_text(path, text)
    else:
        sys.stdout.write(text)



def _io_args(p: at.ArgumentParser, what: str = "inputs") -> None:
    p.add_argument("model", type=at.model_dir, help="model folder written by a recipe (or any HF-layout encoder)")
    p.add_argument("texts", nargs="*", metavar="TEXT", help=f"{what}; a JSON object/list is read as such")
    p.add_argument("--input", type=lambda s: s if s == "-" else at.input_file(s), metavar="FILE",
                   help=f"file with one of the {what} per line (- for stdin)")
    p.add_argument("--output", metavar="FILE", help="write JSON lines here (default: stdout)")
    path_args(p)
    p.add_argument("--threads", type=at.positive_int, default=None, help="torch CPU threads (default: torch's own choice)")


def path_args(p: at.ArgumentParser) -> None:
    """``--backend`` / ``--precision`` (kexue.load's, see kexue.recipes.fastpath) and ``--int8`` (= --precision int8)."""
    from kexue.recipes.fastpath import BACKENDS, PRECISIONS

    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="inference engine: auto = the fastest that equals the requested precision (ONNX Runtime "
                        "when `kexue export onnx` wrote a graph and it is faster here)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp32 (default), bf16 (CPUs with native bf16), int8, or auto = the fastest within the "
                        "quality budget")
    p.add_argument("--int8", action="store_true", help="the same as --precision int8")


def requested_precision(args) -> str:
    """The precision ``--precision`` / ``--int8`` ask for (fp32 when neither is given)."""
    if args.int8 and args.precision not in (None, "int8"):
        raise at.UsageError(f"--int8 contradicts --precision {args.precision}")
    return "int8" if args.int8 else args.precision or "fp32"



def _option_type(name: str):
    """argparse ``type=`` of a generation option: its :class:`GenerationOptions` field reads and checks it."""
    def parse(text: str):
        try:
            return GenerationOptions.parse(name, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = name
    return parse


def _generation_args(p: at.ArgumentParser) -> None:
    """One flag per user option of :class:`GenerationOptions` (``num_beams`` -> ``--num-beams``)."""
    g = p.add_argument_group("generation (generative models only; each takes the options of its task)")
    for name in GenerationOptions.user_options():
        g.add_argument(GenerationOptions.flag(name), type=_option_type(name),
                       help=f"{GenerationOptions.help(name)} (default: the model's own setting)")


def generation_options(args) -> dict:
    """The generation flags given on the command line, by option name."""
    return {k: getattr(args, k) for k in GenerationOptions.user_options() if getattr(args, k) is not None}



def _start(args) -> Predictor:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "output", None):
        at.check_output_file(args.output)
    backend, precision = getattr(args, "backend", "auto"), requested_precision(args)
    predictor = load(args.model, backend=backend, precision=precision)
    if (backend, precision) != ("auto", "fp32") or predictor.path.backend != "torch":
        print(f"kexue: inference path {predictor.path}", file=sys.stderr)
    predictor.progress = True
    return predictor



def predict_parser() -> at.ArgumentParser:
    p = at.ArgumentParser(prog="kexue predict", description="Predict with a saved model; JSON lines out.")
    _io_args(p)
    _generation_args(p)
    return p


def predict_main(argv: list[str] | None = None) -> int:
    args = predict_parser().parse_intermixed_args(argv)
    items = read_inputs(args.texts, args.input)
    predictor = _start(args)
    options = generation_options(args)
    write_lines(predictor.predict(items, **options), args.output)
    return 0



def embed_main(argv: list[str] | None = None) -> int:
    p = at.ArgumentParser(prog="kexue embed", description="Sentence vectors of an encoder; JSON lines out.")
    _io_args(p, "texts")
    p.add_argument("--prompt-name", metavar="NAME", help="prepend the encoder's prompt NAME (its "
                   "config_sentence_transformers.json prompts; default: its default_prompt_name, if any)")
    args = p.parse_intermixed_args(argv)
    items = read_inputs(args.texts, args.input)
    predictor = _start(args)
    if not hasattr(predictor, "embed"):
        raise at.UsageError(f"{args.model} is a {predictor.task} model, not an encoder")
    texts = [predictor.check_text(t) for t in items]
    vectors = predictor.embed(texts, prompt_name=args.prompt_name) if args.prompt_name else predictor.embed(texts)
    write_lines(({"text": t, "embedding": v} for t, v in zip(items, vectors.tolist())), args.output)
    return 0



def search_main(argv: list[str] | None = None) -> int:
    p = at.ArgumentParser(prog="kexue search", description="Nearest sentences by cosine similarity: over a saved "
                          "index (`kexue search INDEX query ...`, nothing re-embedded but the queries) or over a "
                          "corpus file embedded on the fly (`kexue search ENCODER --corpus FILE query ...`).")
    p.add_argument("model", type=at.model_or_index, help="an index folder (`kexue index build`) or an encoder folder")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="queries")
    p.add_argument("--input", type=lambda s: s if s == "-" else at.input_file(s), metavar="FILE",
                   help="file with one query per line (- for stdin)")
    p.add_argument("--output", metavar="FILE", help="write JSON lines here (default: stdout)")
    path_args(p)
    p.add_argument("--threads", type=at.positive_int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--corpus", type=at.input_file, metavar="FILE",
                   help="with an encoder folder: text file, one sentence per line, embedded on every call")
    p.add_argument("--top-k", type=at.positive_int, default=5, help="results per query")
    args = p.parse_intermixed_args(argv)
    queries = read_inputs(args.texts, args.input)
    if (Path(args.model) / "index.json").is_file():
        from kexue.similarity.index import SearchIndex

        if args.corpus:
            raise at.UsageError(f"{args.model} is an index: it already holds its corpus (--corpus is for encoders; "
                                "`kexue index add` adds texts to an index)")
        index = SearchIndex.open(args.model)
        args.model = str(index.check_encoder())
        predictor = _start(args)
        results = index.search(predictor.embed([predictor.check_text(q) for q in queries]), args.top_k)
        write_lines(({"query": q, "results": r} for q, r in zip(queries, results)), args.output)
        return 0
    if not args.corpus:
        raise at.UsageError(f"{args.model} is an encoder folder: give --corpus FILE, or search an index built "
                            "with `kexue index build`")
    predictor = _start(args)
    if not hasattr(predictor, "embed"):
        raise at.UsageError(f"{args.model} is a {predictor.task} model, not an encoder")
    numbered = [(n, ln.strip()) for n, ln in enumerate(Path(args.corpus).read_text(encoding="utf-8").splitlines(), 1)
                if ln.strip()]
    if not numbered:
        raise at.UsageError(f"--corpus {args.corpus} holds no sentences")
    lines, corpus = [n for n, _ in numbered], [t for _, t in numbered]
    write_lines(predictor.search([predictor.check_text(q) for q in queries], corpus, args.top_k, lines), args.output)
    return 0


def chat_parser() -> at.ArgumentParser:
    p = at.ArgumentParser(prog="kexue chat", description="Chat with a dialogue model: one turn per stdin line "
                          "(an empty line starts a new dialogue); replies on stdout.")
    p.add_argument("model", type=at.model_dir, help="folder written by `kexue dialogue`")
    p.add_argument("--threads", type=at.positive_int, default=None, help="torch CPU threads (default: torch's own choice)")
    path_args(p)
    _generation_args(p)
    return p


def chat_main(argv: list[str] | None = None) -> int:
    args = chat_parser().parse_args(argv)
    predictor = _start(args)
    predictor.progress = False  # one reply per line: a progress bar would only clutter the chat
    if predictor.task != "dialogue":
        raise at.UsageError(f"{args.model} is a {predictor.task} model; `kexue chat` needs a dialogue model")
    options = generation_options(args)
    history: list[str] = []
    for line in sys.stdin:
        turn = line.strip()
        if not turn:
            history = []
            continue
        history.append(turn)
        reply = "".join(stream_reply(predictor, history, options, lambda s: print(s, end="", flush=True)))
        print(flush=True)
        history.append(reply)
    return 0


def stream_reply(predictor: Predictor, context: list[str], options: dict, show=None) -> Iterator[str]:
    """The reply to ``context`` piece by piece as its tokens are picked (``show(piece)`` for each): the
    same text as ``predictor.predict([context], **options)``; beam search arrives in one piece."""
    (decoding,) = predictor.decodings([predictor.check(context)], **predictor.check_options(options))
    if decoding.options.num_beams > 1:
        pieces: Iterable[str] = [predictor.predict([context], **options)[0]["reply"]]
    else:
        pieces = _pieces(decoding)
    for piece in pieces:
        if show is not None:
            show(piece)
        yield piece


def _pieces(decoding) -> Iterator[str]:
    from kexue.generation import BatchDecoder

    decoder = BatchDecoder(max_rows=1)
    job = decoder.submit(decoding.state, decoding.options, decoding.eos_id)
    sent = ""
    while not job.done:
        decoder.step()
        if job.error is not None:
            raise job.error
        text = decoding.text(job.tokens[0])
        if text.startswith(sent) and len(text) > len(sent):  # the tokenizer's decode only appends
            yield text[len(sent):]
            sent = text
    final = decoding.output(job.tokens)["reply"]
    if final != sent:
        raise RuntimeError("streamed text differs from the reply: the tokenizer's decode is not append-only")

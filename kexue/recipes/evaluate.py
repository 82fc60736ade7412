"""``kexue evaluate``: Spearman of a sentence encoder on every STS set, or on the user's pair files
(:mod:`kexue.similarity.evaluate`, 《无监督语义相似度哪家强？我们做了个比较全面的评测》): ρ = Spearman(cos(u_i, v_i), y_i)
with the vectors the model's folder makes (its pooling, normalisation, whitening: ``kexue.load(folder).embed``),
texts cut at ``--maxlen`` tokens."""
from __future__ import annotations

import argparse
import time

import torch

from kexue.recipes import args as at
from kexue.similarity.evaluate import STS_SETS, Encoder, evaluate_pairs, evaluate_sts, format_table


def _encoder_for(model_spec: str, progress: bool = False, maxlen: int | None = None) -> Encoder:
    """The encoder predictor of a model folder (a shipped name: its folder), so the vectors are those
    ``kexue embed`` / ``kexue.load(...).embed`` give: the folder's own pooling (``manifest.json`` ``pooling``, or
    a sentence-transformers ``1_Pooling/config.json``: mean, cls, max, first-last-avg ...), normalisation and
    whitening; ``maxlen`` (tokens) replaces the folder's own (task.json / ``max_seq_length``, else 256)."""
    from kexue.models.pretrained import minilm_path, zh_mini_path
    from kexue.recipes.predictor import load

    folder = {"minilm": minilm_path, "zh-mini": zh_mini_path}.get(model_spec)
    predictor = load(folder() if folder else model_spec)
    if not hasattr(predictor, "embed"):
        raise ValueError(f"{model_spec} holds a {predictor.task} model, not a sentence encoder")
    predictor.progress = progress
    if maxlen is not None:
        positions = getattr(getattr(predictor.encoder, "config", None), "max_position_embeddings", None)
        if isinstance(positions, int) and maxlen > positions:
            raise at.UsageError(f"--maxlen {maxlen} exceeds the {positions} positions of {model_spec}")
        predictor.maxlen = maxlen
    return predictor.embed


def _sets(text: str) -> list[tuple[str, str]]:
    if text == "all":
        return list(STS_SETS)
    sets = [tuple(s.strip().split("/")) for s in text.split(",")]
    bad = [("/".join(s)) for s in sets if s not in STS_SETS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown STS set(s) {', '.join(bad)}; "
                                         f"known: {', '.join('/'.join(s) for s in STS_SETS)}")
    return sets



def main(argv: list[str] | None = None) -> int:

    ap = at.ArgumentParser(prog="kexue evaluate", description="Spearman on the STS sets (sts-b-zh, sts-b-en)")
    ap.add_argument("--model", type=at.model_or_shipped, default="minilm",
                    help="'minilm' (embedded all-MiniLM-L6-v2), 'zh-mini' (kexue-zh-mini) or a model folder")
    ap.add_argument("--sets", type=_sets, default="all", help="comma list like en/test,zh/valid, or 'all'")
    ap.add_argument("--pairs", type=at.input_file, metavar="FILE", action="append",
                    help="score these pairs instead of the STS sets: sentence1<TAB>sentence2<TAB>label (0/1 or 0-5) "
                         "or JSON lines with sentence1/sentence2/label; repeatable")
    ap.add_argument("--limit", type=at.positive_int, default=None, help="first N pairs of each set (quick runs)")
    ap.add_argument("--maxlen", type=at.positive_int, default=None, metavar="TOKENS",
                    help="longest text in tokens, longer ones cut (long passages: raise it, up to the model's "
                         "positions) (default: the folder's own maxlen, from its task.json or sentence-transformers "
                         "max_seq_length, else 256)")
    ap.add_argument("--threads", type=at.positive_int, default=None, help="torch CPU threads")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    encode = _encoder_for(args.model, progress=not args.no_progress, maxlen=args.maxlen)
    t0 = time.perf_counter()
    if args.pairs:
        from kexue.data.files import require
        from kexue.data.pairs import read_pairs

        pairs = {f: require(read_pairs(f)[: args.limit], 2, f, "pair", "Spearman's correlation needs 2")
                 for f in args.pairs}
        scores = {f: evaluate_pairs(encode, p) for f, p in pairs.items()}
    else:
        scores = evaluate_sts(encode, args.sets, args.limit, progress=not args.no_progress)
    print(format_table({args.model: scores}))
    print(f"({time.perf_counter() - t0:.1f}s)")
    return 0

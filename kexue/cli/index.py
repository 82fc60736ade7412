"""``kexue index build|add``: a persistent search index over a corpus (:mod:`kexue.similarity.index`), so that
``kexue search INDEX query`` and ``kexue serve ENCODER --index INDEX`` embed only the queries."""
from __future__ import annotations

from pathlib import Path

from kexue.recipes import args as at
from kexue.recipes.predictor import load
from kexue.similarity.index import SearchIndex


def _corpus(path: str) -> tuple[list[str], list[dict]]:
    numbered = [(n, ln.strip()) for n, ln in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1)
                if ln.strip()]
    if not numbered:
        raise at.UsageError(f"--corpus {path} holds no sentences")
    return [t for _, t in numbered], [{"source": str(path), "line": n} for n, _ in numbered]


def _encoder(folder: str, threads: int | None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    predictor = load(folder)
    if not hasattr(predictor, "embed"):
        raise at.UsageError(f"{folder} is a {predictor.task} model, not a sentence encoder")
    predictor.progress = True
    return predictor


def main(argv: list[str] | None = None) -> int:
    p = at.ArgumentParser(prog="kexue index", description="Build or extend a persistent search index: the corpus "
                          "is embedded once; `kexue search INDEX query` then embeds only the queries.")
    sub = p.add_subparsers(dest="action", required=True, metavar="build|add")
    b = sub.add_parser("build", help="embed a corpus into a new index folder", formatter_class=at.HelpFormatter)
    b.add_argument("model", type=at.model_dir, help="encoder folder (e.g. written by `kexue similarity`)")
    b.add_argument("--corpus", type=at.input_file, required=True, metavar="FILE", help="one sentence per line")
    b.add_argument("--out", required=True, metavar="DIR", help="the index folder")
    b.add_argument("--backend", choices=("torch", "faiss"), default="torch",
                   help="exact search in torch, or faiss IndexFlatIP (same results, faster on large corpora)")
    b.add_argument("--overwrite", action="store_true", help="replace an index already in --out")
    b.add_argument("--threads", type=at.positive_int, default=None, help="torch CPU threads")
    a = sub.add_parser("add", help="embed more sentences into an existing index", formatter_class=at.HelpFormatter)
    a.add_argument("index", help="index folder")
    a.add_argument("--corpus", type=at.input_file, required=True, metavar="FILE", help="one sentence per line")
    a.add_argument("--threads", type=at.positive_int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.action == "build":
        texts, sources = _corpus(args.corpus)
        predictor = _encoder(args.model, args.threads)
        index = SearchIndex.build(args.out, texts, predictor.embed, args.model, sources, args.backend, args.overwrite)
        print(f"kexue index: {len(index)} sentences, {index.meta['dim']} dims -> {args.out}")
        return 0
    index = SearchIndex.open(args.index)
    predictor = _encoder(str(index.check_encoder()), args.threads)
    texts, sources = _corpus(args.corpus)
    added = index.add(texts, predictor.embed, sources)
    print(f"kexue index: +{added} sentences, {len(index)} in all -> {args.index}")
    return 0

"""``kexue mine``: hard negatives for ``kexue similarity --loss infonce``, mined with an encoder over a corpus
(:func:`kexue.similarity.mining.mine_hard_negatives`; 《中文任务还是SOTA吗？我们给SimCSE补充了一些实验》).

    kexue mine MODEL --pairs FILE [--corpus FILE] --out triplets.tsv [--k 1] [--margin M] [--max-similarity S]

MODEL is an encoder folder (a ``kexue similarity`` output, any HF-layout encoder) or a shipped one (``minilm``,
``zh-mini``), read through :func:`kexue.load` so its pooling and whitening apply. ``--pairs`` holds the
(anchor, positive) lines: a triplet file (its negatives are replaced) or a labelled pair file (its positive
pairs, :mod:`kexue.data.triplets`); ``--corpus`` the candidate sentences (default: every sentence of
``--pairs``). The output TSV ``anchor<TAB>positive<TAB>negative_1 ... negative_k`` is what
``kexue similarity --loss infonce --train`` reads."""
from __future__ import annotations

import json
import sys

from kexue.data.triplets import read_sentences, read_triplets, write_triplets
from kexue.recipes import args as at


def main(argv: list[str] | None = None) -> int:
    p = at.ArgumentParser(prog="kexue mine", description="Mine hard negatives with an encoder: for each (anchor, "
                          "positive), the corpus sentences most similar to the anchor, the pair itself excluded; "
                          "writes the triplet TSV of `kexue similarity --loss infonce`.")
    p.add_argument("model", type=at.model_or_shipped, metavar="MODEL",
                   help="encoder folder, hub id, or a shipped encoder (minilm, zh-mini)")
    p.add_argument("--pairs", type=at.input_file, required=True, metavar="FILE",
                   help="anchor<TAB>positive[<TAB>...] lines, or a labelled pair file (its label-1 pairs)")
    p.add_argument("--corpus", type=at.input_file, default=None, metavar="FILE",
                   help="candidate negatives: one sentence per line, or a pair / triplet file's sentences "
                        "(default: the sentences of --pairs)")
    p.add_argument("--out", required=True, metavar="FILE", help="the triplet TSV to write")
    p.add_argument("--k", type=at.positive_int, default=1, help="hard negatives per pair")
    p.add_argument("--margin", type=at.nonnegative_float, default=None,
                   help="keep only candidates at least this much less similar to the anchor than its positive "
                        "(likely false negatives dropped; default: no margin)")
    p.add_argument("--max-similarity", type=at.finite_float, default=None, metavar="COS",
                   help="keep only candidates whose cosine with the anchor is at most COS (default: no ceiling)")
    p.add_argument("--positive-min", type=at.finite_float, default=None, metavar="SCORE",
                   help="a --pairs file with graded scores: pairs scoring at least SCORE are the positives "
                        "(default: labels must be 0/1)")
    p.add_argument("--threads", type=at.positive_int, default=None, help="torch CPU threads (default: torch's own)")
    args = p.parse_args(argv)
    if args.max_similarity is not None and not -1 <= args.max_similarity <= 1:
        p.error(f"--max-similarity is a cosine in [-1, 1], got {args.max_similarity:g}")
    at.check_output_file(args.out)
    pairs = read_triplets(args.pairs, args.positive_min)
    corpus = read_sentences(args.corpus or args.pairs)
    import torch

    from kexue.recipes.common import checkpoint_folder
    from kexue.recipes.predictor import load
    from kexue.similarity.mining import mine_hard_negatives

    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = load(checkpoint_folder(args.model))
    if not hasattr(predictor, "embed"):
        raise at.UsageError(f"{args.model} is a {predictor.task} model, not an encoder")
    mined = mine_hard_negatives(predictor.embed, [(t.anchor, t.positive) for t in pairs], corpus, args.k,
                                args.margin, args.max_similarity)
    if not mined.triplets:
        raise at.UsageError(f"no pair of {args.pairs} has {args.k} candidate negatives in the corpus of "
                            f"{len(corpus)} sentences; lower --k or --margin, or give a larger --corpus")
    write_triplets(mined.triplets, args.out)
    if mined.left_out:
        print(f"kexue mine: {len(mined.left_out)} of {len(pairs)} pairs have fewer than {args.k} candidates and were "
              f"left out (first: --pairs pair {mined.left_out[0] + 1})", file=sys.stderr)
    print(json.dumps({"pairs": len(pairs), "corpus": len(corpus), "k": args.k, "triplets": len(mined.triplets),
                      "left_out": len(mined.left_out), "out": args.out}, ensure_ascii=False))
    return 0

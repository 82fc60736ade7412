"""The Chinese half of ``kexue demo``: kexue-zh-mini + CoSENT on Chinese STS-B, then semantic search.

《CoSENT（一）：比Sentence-BERT更有效的句向量方案》: loss = log(1 + Σ_{y_i > y_j} exp(20·(cos_j − cos_i))) on
u = mean-pool(encoder(a)), v = mean-pool(encoder(b)); similarity = cos(u, v).

kexue-zh-mini (the small Chinese RoFormer kexue pretrained itself, shipped in ``kexue/weights``) is only an
MLM: its zero-shot mean-pooled vectors rank the STS-B-zh valid pairs poorly. A fixed number of CoSENT steps
on the train pairs (a couple of minutes on one CPU thread) must raise the valid Spearman, or the demo fails.
The fine-tuned encoder is saved (``encoder-zh/``, the layout ``kexue embed / search / serve`` read), then
used for search over held-out sentences: every test sentence is in the corpus except the queries, the
first sentences of test pairs scored ≥ 4 (paraphrases), so each query's partner is the one sentence
a good encoder should rank first (recall@1 / @3, before and after fine-tuning). All offline.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from kexue.recipes import args as at
from kexue.data import shipped as datasets
from kexue.data.shipped import Pair
from kexue.io import atomic_write
from kexue.models.pretrained import embed, shipped
from kexue.similarity.evaluate import evaluate_pairs
from kexue.similarity.finetune import finetune_cosent
from kexue.similarity.search import TorchIndex

MAXLEN = 64  # characters; STS-B-zh sentences are far shorter


def add_arguments(ap) -> None:
    """The Chinese half's options (``kexue demo --help`` shows them with their defaults)."""
    g = ap.add_argument_group("Chinese half (kexue-zh-mini + CoSENT on STS-B-zh)")
    g.add_argument("--zh-steps", type=at.positive_int, default=120,
                   help="CoSENT fine-tuning steps (74 s on a quiet 2-core CPU, 141 s on a busy one)")
    g.add_argument("--zh-batch-size", type=at.positive_int, default=32, help="sentence pairs per step")
    g.add_argument("--zh-lr", type=at.positive_float, default=1e-4, help="learning rate (after a 10-step warm-up)")
    g.add_argument("--zh-train-pairs", type=at.positive_int, default=None,
                   help="use only the first N STS-B-zh train pairs (default: all 5231)")
    g.add_argument("--zh-dev-pairs", type=at.positive_int, default=None,
                   help="score only the first N STS-B-zh valid pairs (default: all 1458)")
    g.add_argument("--zh-test-pairs", type=at.positive_int, default=None,
                   help="build the search corpus and queries from the first N STS-B-zh test pairs (default: all 1361)")
    g.add_argument("--zh-show", type=at.positive_int, default=3, help="queries whose top-3 results are printed")


def search_split(pairs: list[Pair], min_score: float = 4.0) -> tuple[list[tuple[str, str]], list[str]]:
    """``(queries, corpus)`` from held-out pairs: queries are (a, b) of pairs scored ≥ ``min_score`` whose b is
    not itself a query; the corpus is every sentence of ``pairs`` except the queries (so b is in it, a is not)."""
    candidates = [(p.a, p.b) for p in pairs if p.score >= min_score and p.a != p.b]
    asked = {a for a, _ in candidates}
    queries, seen = [], set()
    for a, b in candidates:
        if b not in asked and a not in seen:
            queries.append((a, b))
            seen.add(a)
    corpus = sorted({s for p in pairs for s in (p.a, p.b)} - seen)
    return queries, corpus


def search(encoder, tokenizer, queries: list[str], corpus: list[str], k: int = 3,
           progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``([Q, k] cosines, [Q, k] corpus indices)``, best first (exact search)."""
    index = TorchIndex()
    index.add(embed(encoder, tokenizer, corpus, maxlen=MAXLEN, progress=progress))
    return index.search(embed(encoder, tokenizer, queries, maxlen=MAXLEN), k)


def recall(idx: torch.Tensor, gold: list[int], k: int) -> float:
    """Share of queries whose gold corpus index is among their first ``k`` results."""
    return sum(g in row[:k] for g, row in zip(gold, idx.tolist())) / len(gold)


def require_gain(name: str, before: float, after: float) -> None:
    """Fail loudly (non-zero exit) when fine-tuning did not raise the score."""
    if not after > before:
        raise SystemExit(f"{name}: CoSENT fine-tuning did not improve Spearman: {before:.4f} -> {after:.4f}")


def run(args, out: Path, progress: bool = True) -> tuple[dict, torch.nn.Module, object]:
    """The Chinese half; returns ``(metrics, fine-tuned encoder, tokenizer)`` (the caller writes the metrics
    and calls :func:`require_gain`)."""
    t_start = time.perf_counter()
    train = datasets.sts_zh("train")[: args.zh_train_pairs]
    dev = datasets.sts_zh("valid")[: args.zh_dev_pairs]
    queries, corpus = search_split(datasets.sts_zh("test")[: args.zh_test_pairs])
    if not queries:
        raise ValueError("--zh-test-pairs leaves no test pair scored >= 4 to use as a search query")
    where = {s: i for i, s in enumerate(corpus)}
    gold = [where[b] for _, b in queries]
    torch.manual_seed(0)
    encoder, tok = shipped("zh-mini")
    print(f"\nSTS-B zh: {len(train)} train pairs, {len(dev)} valid pairs; kexue-zh-mini (shipped), "
          f"{sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}M params")
    print(f"search: {len(queries)} queries (first sentences of test pairs scored >= 4) over {len(corpus)} "
          "other test sentences")

    def measure(stage: str) -> dict:
        print(f"{stage}: scoring {len(dev)} valid pairs")
        rho = evaluate_pairs(lambda texts: embed(encoder, tok, texts, maxlen=MAXLEN, progress=progress), dev)
        scores, idx = search(encoder, tok, [q for q, _ in queries], corpus, k=3, progress=progress)
        m = {"spearman": rho, "recall@1": recall(idx, gold, 1), "recall@3": recall(idx, gold, 3)}
        print(f"{stage}: Spearman on valid = {rho:.4f}; search recall@1 = {m['recall@1']:.3f}, "
              f"recall@3 = {m['recall@3']:.3f}")
        return {**m, "_scores": scores, "_idx": idx}

    zero = measure("zero-shot")
    t0 = time.perf_counter()
    # finetune_cosent batches pairs of similar length: STS-B-zh sentences average 20 characters but a random
    # batch of 32 holds one of ~64, so length batching roughly halves the padded work per step.
    losses = [float(x) for x in finetune_cosent(encoder, tok, train, seconds=None, batch_size=args.zh_batch_size,
                                                lr=args.zh_lr, maxlen=MAXLEN, max_steps=args.zh_steps, seed=0,
                                                progress=progress, freeze_token_embeddings=False)]
    head = losses[: min(20, len(losses))]
    tail = losses[-min(20, len(losses)):]
    train_info = {"steps": len(losses), "pairs_seen": len(losses) * args.zh_batch_size, "lr": args.zh_lr,
                  "seconds": time.perf_counter() - t0, "first20_loss": sum(head) / len(head),
                  "last20_loss": sum(tail) / len(tail)}
    print(f"fine-tuned {train_info['steps']} steps ({train_info['pairs_seen']} pairs) in {train_info['seconds']:.0f}s, "
          f"mean loss first/last 20 steps {train_info['first20_loss']:.3f} -> {train_info['last20_loss']:.3f}")
    from kexue.recipes.folder import save_encoder

    save_encoder(out / "encoder-zh", encoder, tok)  # one unit with its manifest: kexue embed / search / serve
    atomic_write(out / "corpus-zh.txt", lambda tmp: Path(tmp).write_text("".join(s + "\n" for s in corpus),
                                                                         encoding="utf-8"))
    print(f"saved the fine-tuned encoder to {out / 'encoder-zh'} and the search corpus to {out / 'corpus-zh.txt'} "
          f"(try: kexue search {out / 'encoder-zh'} --corpus {out / 'corpus-zh.txt'} 一只猫在喝牛奶。)")
    tuned = measure("CoSENT fine-tuned")

    shown = []
    for qi in range(min(args.zh_show, len(queries))):
        results = [{"text": corpus[j], "score": s}
                   for s, j in zip(tuned["_scores"][qi].tolist(), tuned["_idx"][qi].tolist())]
        shown.append({"query": queries[qi][0], "gold": queries[qi][1], "results": results})
        print(f"\nquery: {queries[qi][0]}   (its test-pair partner: {queries[qi][1]})")
        for r, res in enumerate(results, 1):
            mark = "  <- partner" if res["text"] == queries[qi][1] else ""
            print(f"  {r}. {res['score']:.4f}  {res['text']}{mark}")

    strip = lambda m: {k: v for k, v in m.items() if not k.startswith("_")}
    metrics = {"model": "kexue-zh-mini", "set": "STS-B-zh", "train_pairs": len(train), "dev": "valid",
               "dev_pairs": len(dev), "zero_shot": strip(zero), "finetuned": strip(tuned), "train": train_info,
               "search": {"queries": len(queries), "corpus": len(corpus), "examples": shown},
               "encoder": str(out / "encoder-zh"), "seconds": time.perf_counter() - t_start}
    return metrics, encoder, tok


def summary_line(zh: dict) -> str:
    z, f = zh["zero_shot"], zh["finetuned"]
    return (f"zh: kexue-zh-mini STS-B-zh valid Spearman {z['spearman']:.4f} -> {f['spearman']:.4f} "
            f"(+{f['spearman'] - z['spearman']:.4f}) after {zh['train']['steps']} CoSENT steps in "
            f"{zh['train']['seconds']:.0f}s; search recall@1 {z['recall@1']:.3f} -> {f['recall@1']:.3f} "
            f"({zh['search']['queries']} queries, {zh['search']['corpus']} sentences); {zh['seconds']:.0f}s in all")

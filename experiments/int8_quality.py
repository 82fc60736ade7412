"""What int8 costs in quality: the accuracy measurements behind ``kexue.tools.quantize``.

1. Encoder: all-MiniLM-L6-v2 (real weights) on the English STS-B test set, and kexue-zh-mini on the
   Chinese one, Spearman ×100 of the cosine similarities, fp32 vs every lower-precision path kexue has:
   bf16 (``to_bf16``, where the CPU has it natively), ``quantize(model, "int8")`` plain and smoothed
   (SmoothQuant, calibrated on 256 STS-B train sentences), and ONNX Runtime fp32 / int8 (per tensor and per
   output column) of the graph ``kexue export onnx`` writes. Each path's vectors are also compared with
   fp32's, on the test sentences and on the calibration sentences ``kexue.load(precision="auto")`` measures,
   which is where the budget of :mod:`kexue.recipes.graphs` comes from.
   Goal: int8 within 0.5 points of fp32.
2. Decoding: a small GPT trained here on real Chinese text (fortunes-zh quotes and Tang/Song poems,
   character vocabulary, a few hundred AdamW steps), then on held-out texts:
   - perplexity (teacher forcing) per mode; goal: within 1 % of fp32;
   - greedy continuations of held-out prompts, fp32 vs each mode, share of generated positions whose
     token is the same (free-running, so one early divergence counts against all later tokens);
     goal: at least 90 %.

    PYTHONPATH=. python experiments/int8_quality.py [--parts sts sts-zh lm] [--steps 300] [--threads 1]

Writes ``experiments/results/int8_quality.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _similarity_setup import parse  # noqa: E402

from kexue.data import shipped as datasets  # noqa: E402
from kexue.generation import decoding_state, greedy  # noqa: E402
from kexue.io import atomic_write, write_json  # noqa: E402
from kexue.models import build_model  # noqa: E402
from kexue.tools.quantize import quantize  # noqa: E402
from kexue.text.tokenizer import Tokenizer, build_vocab  # noqa: E402

MODES = ["int8", "int8-weight-only", "fp32-decode"]
# weight-only is left out of STS: its AVX-512 kernel runs ~10x slower than fp32 on an AVX2 CPU.
# bf16 runs only where the CPU has it natively; the onnxruntime modes run the graph `kexue export onnx` writes.
STS_MODES = ["fp32", "bf16", "int8", "int8-smoothed", "onnxruntime", "onnxruntime-int8", "onnxruntime-int8-per-channel"]


def sts_encoders(model, tok, calib: list[str], workdir: Path) -> dict:
    """The encoder of every STS mode that runs on this machine, each a model ``embed`` takes."""
    from kexue.hardware import native_bf16
    from kexue.models.pretrained import embed
    from kexue.tools.onnx_export import EncoderGraph, OnnxEncoder, OnnxGraph, available, export_graph, quantize_graph
    from kexue.tools.quantize import to_bf16

    out = {"fp32": model}
    if native_bf16():
        out["bf16"] = to_bf16(model)
    out["int8"] = quantize(model, "int8")
    out["int8-smoothed"] = quantize(model, "int8", calibration=lambda f: embed(f, tok, calib))
    if available() is None:
        example = tok.encode_batch(calib[:2], maxlen=32)
        fp32 = export_graph(EncoderGraph(model), example, workdir / "model.onnx", ["hidden"],
                            model.config.max_position_embeddings)
        out["onnxruntime"] = OnnxEncoder(OnnxGraph(fp32), model.config)
        for name, pc in [("onnxruntime-int8", False), ("onnxruntime-int8-per-channel", True)]:
            out[name] = OnnxEncoder(OnnxGraph(quantize_graph(fp32, workdir / f"{name}.onnx", per_channel=pc)),
                                    model.config)
    return out


def sts_quality(model, tok, pairs, calib: list[str], label: str) -> dict:
    """Spearman ×100 of every mode on ``pairs`` and how close its sentence vectors stay to fp32's
    (cosine of each sentence's two vectors: mean and minimum over the sentences)."""
    import tempfile

    from kexue.models.pretrained import embed
    from kexue.similarity.evaluate import spearman

    from kexue.recipes.graphs import CALIBRATION_TEXTS, agreement

    texts = list(dict.fromkeys([p.a for p in pairs] + [p.b for p in pairs]))
    where = {t: i for i, t in enumerate(texts)}
    gold = torch.tensor([p.score for p in pairs])
    out: dict = {"pairs": len(pairs), "sentences": len(texts)}
    ref = ref_cos = ref_sample = None
    with tempfile.TemporaryDirectory() as d:
        for mode, m in sts_encoders(model, tok, calib, Path(d)).items():
            t0 = time.perf_counter()
            v = embed(m, tok, texts, batch_size=64)
            seconds = time.perf_counter() - t0
            cos = (v[[where[p.a] for p in pairs]] * v[[where[p.b] for p in pairs]]).sum(-1)
            rho = spearman(cos, gold)
            ref = v if ref is None else ref
            ref_cos = cos if ref_cos is None else ref_cos
            agree = (v * ref).sum(-1)  # both L2-normalised: the cosine of each sentence's vectors
            # what kexue.load(precision="auto") measures: the calibration sentences' agreement with fp32
            sample = [{"embedding": e} for e in embed(m, tok, list(CALIBRATION_TEXTS)).tolist()]
            ref_sample = sample if ref_sample is None else ref_sample
            calib_agree = agreement("encoder", ref_sample, sample)
            out[mode] = {"spearman_x100": round(100 * rho, 3), "seconds": round(seconds, 1),
                         "cosine_to_fp32_mean": round(float(agree.mean()), 6),
                         "cosine_to_fp32_min": round(float(agree.min()), 6),
                         "max_abs_diff_vectors": float((v - ref).abs().max()),
                         "pair_cosine_max_abs_diff": float((cos - ref_cos).abs().max()),
                         "pair_cosine_spearman_to_fp32": round(spearman(cos, ref_cos), 6),
                         "calibration_sentences": calib_agree}
            print(f"{label} {mode:<29} Spearman {100 * rho:.2f}  cos to fp32 mean {float(agree.mean()):.5f} "
                  f"min {float(agree.min()):.5f}; pair cos |Δ| max {float((cos - ref_cos).abs().max()):.4f}, "
                  f"Spearman to fp32 {spearman(cos, ref_cos):.5f}; calibration sentences {calib_agree}", flush=True)
    for mode in out:
        if isinstance(out[mode], dict) and mode != "fp32":
            out[mode]["delta_points"] = round(out[mode]["spearman_x100"] - out["fp32"]["spearman_x100"], 3)
    return out


def sts_table(s: dict, title: str) -> list[str]:
    lines = [f"{title} ({s['pairs']} pairs), Spearman x100; cosine of each sentence's vector to its fp32 vector; "
             "on the 48 calibration inputs kexue.load(precision='auto') measures (kexue.recipes.graphs.CALIBRATION_TEXTS):"
             " the minimum cosine and the Spearman of their pairwise similarities against fp32's:", "",
             "| mode | Spearman | vs fp32 | cosine mean | cosine min | calibration: cosine min | calibration: similarity "
             "Spearman |", "|---|---|---|---|---|---|---|",
             f"| fp32 | {s['fp32']['spearman_x100']:.2f} | | | | | |"]
    for m in [m for m in s if m in STS_MODES[1:]]:
        c = s[m].get("calibration_sentences", {})
        lines.append(f"| {m} | {s[m]['spearman_x100']:.2f} | {s[m]['delta_points']:+.2f} | "
                     f"{s[m].get('cosine_to_fp32_mean', float('nan')):.5f} | {s[m].get('cosine_to_fp32_min', float('nan')):.5f} | "
                     f"{c.get('cosine_min', float('nan')):.4f} | {c.get('similarity_spearman', float('nan')):.4f} |")
    return lines + [""]


def sts_minilm(limit: int | None) -> dict:
    from kexue.models.pretrained import minilm

    pairs = datasets.sts_en("test")[:limit] if limit else datasets.sts_en("test")
    model, tok = minilm()
    # SmoothQuant calibration on STS-B *train* sentences (the test set is never seen before scoring)
    calib = [p.a for p in datasets.sts_en("train")[:256]]
    return sts_quality(model, tok, pairs, calib, "STS-B en test, MiniLM")


def sts_zh_mini(limit: int | None) -> dict:
    from kexue.models.pretrained import zh_mini

    pairs = datasets.sts_zh("test")[:limit] if limit else datasets.sts_zh("test")
    model, tok = zh_mini(with_mlm=False)
    calib = [p.a for p in datasets.sts_zh("train")[:256]]
    return sts_quality(model, tok, pairs, calib, "STS-B zh test, kexue-zh-mini")


def lm_batches(ids: list[list[int]], length: int, batch: int, steps: int, seed: int = 0):
    """Random windows of ``length + 1`` tokens from the concatenated training stream."""
    stream = torch.tensor([t for seq in ids for t in seq])
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        start = torch.randint(0, len(stream) - length - 1, (batch,), generator=g)
        yield torch.stack([stream[s:s + length + 1] for s in start.tolist()])


def train_gpt(tok: Tokenizer, train_ids: list[list[int]], steps: int, lr: float, length: int = 64):
    cfg = dict(vocab_size=tok.vocab_size, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
               intermediate_size=1024, max_position_embeddings=256, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, model_type="gpt")
    model = build_model(cfg, family="gpt", application="lm")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    t0 = time.perf_counter()
    for step, x in enumerate(lm_batches(train_ids, length, 16, steps)):
        logits = model(x[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step:4d} loss {loss.item():.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return model.eval(), cfg


@torch.inference_mode()
def perplexity(model, seqs: list[list[int]]) -> float:
    nll, n = 0.0, 0
    for s in seqs:
        x = torch.tensor([s])
        logits = model(x[:, :-1]).logits
        nll += float(F.cross_entropy(logits[0], x[0, 1:], reduction="sum"))
        n += len(s) - 1
    return math.exp(nll / n)


@torch.inference_mode()
def greedy_outputs(model, prompts: list[list[int]], new: int) -> list[list[int]]:
    return [greedy(decoding_state(model, torch.tensor([p])), new)[0] for p in prompts]


def lm_quality(steps: int, n_eval: int, new_tokens: int, lr: float) -> dict:
    texts = [t for t in datasets.chinese_text() if len(t) >= 24]
    random.Random(0).shuffle(texts)
    held, train = texts[:n_eval], texts[n_eval:]
    tok = Tokenizer(build_vocab(train, min_count=2))
    train_ids = [tok.encode(t)[0] for t in train]
    print(f"GPT on {len(train)} Chinese texts ({sum(map(len, train_ids))} tokens), vocab {tok.vocab_size}, "
          f"{steps} steps", flush=True)
    model, cfg = train_gpt(tok, train_ids, steps, lr)
    held_ids = [tok.encode(t, maxlen=128)[0] for t in held]
    prompts = [ids[:9] for ids in held_ids]  # [CLS] + 8 characters
    out = {"config": cfg, "steps": steps, "lr": lr, "heldout_texts": len(held), "greedy_new_tokens": new_tokens}
    ppl32 = perplexity(model, held_ids)
    ref = greedy_outputs(model, prompts, new_tokens)
    out["fp32"] = {"perplexity": round(ppl32, 4)}
    print(f"held-out perplexity fp32 {ppl32:.3f}", flush=True)
    for mode in MODES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = quantize(model, mode)
        ppl = perplexity(q, held_ids)
        outs = greedy_outputs(q, prompts, new_tokens)
        same = sum(a == b for r, o in zip(ref, outs) for a, b in zip(r, o))
        total = sum(len(r) for r in ref)
        first = sum(1 for r, o in zip(ref, outs) if r[:1] == o[:1]) / len(ref)
        out[mode] = {"perplexity": round(ppl, 4), "perplexity_change_pct": round(100 * (ppl / ppl32 - 1), 3),
                     "greedy_token_agreement_pct": round(100 * same / total, 2),
                     "first_token_agreement_pct": round(100 * first, 2)}
        print(f"{mode:<17} perplexity {ppl:.3f} ({100 * (ppl / ppl32 - 1):+.2f} %), greedy tokens equal to fp32 "
              f"{100 * same / total:.1f} %", flush=True)
    out["example"] = {"prompt": tok.decode(prompts[0]), "fp32": tok.decode(ref[0])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--heldout", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--parts", nargs="*", default=["sts", "sts-zh", "lm"],
                    help="sts (MiniLM), sts-zh (kexue-zh-mini), lm (GPT); others kept from the file")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--sts-limit", type=int, default=None, help="first N test pairs (default: all)")
    args, out = parse(ap, "experiments/results")
    path = out / "int8_quality.json"
    new = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    if "sts" in args.parts:
        new["sts_b_en_minilm"] = sts_minilm(args.sts_limit)
    if "sts-zh" in args.parts:
        new["sts_b_zh_zh_mini"] = sts_zh_mini(args.sts_limit)
    if "lm" in args.parts:
        new["gpt_fortunes_zh"] = lm_quality(args.steps, args.heldout, args.new_tokens, args.lr)
    results = json.loads(path.read_text()) if path.exists() else {}  # read now: parts may run separately
    results.update(new)
    if not {"sts_b_en_minilm", "gpt_fortunes_zh"} <= results.keys():
        write_json(path, results)
        return
    write_json(path, results)
    g = results["gpt_fortunes_zh"]
    lines = ["# int8 quality (experiments/int8_quality.py)", ""]
    for key, title in [("sts_b_en_minilm", "all-MiniLM-L6-v2, STS-B en test"),
                       ("sts_b_zh_zh_mini", "kexue-zh-mini, STS-B zh test")]:
        if key in results:
            lines += sts_table(results[key], title)
    lines += [f"GPT {g['config']['num_hidden_layers']}x{g['config']['hidden_size']} trained {g['steps']} steps on "
              f"fortunes-zh; {g['heldout_texts']} held-out texts; greedy {g['greedy_new_tokens']} new tokens:", "",
              "| mode | perplexity | change | greedy tokens = fp32 |", "|---|---|---|---|",
              f"| fp32 | {g['fp32']['perplexity']:.3f} | | |"]
    lines += [f"| {m} | {g[m]['perplexity']:.3f} | {g[m]['perplexity_change_pct']:+.2f} % | "
              f"{g[m]['greedy_token_agreement_pct']:.1f} % |" for m in MODES]
    text = "\n".join(lines) + "\n"
    atomic_write(out / "int8_quality.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

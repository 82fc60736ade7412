"""Generation speed: kexue fp32 / fp32 [in, out] / int8 (KV cache) vs HF ``generate`` (with cache), one process.

Same random weights on both sides: a GPT-2-layout LM (6 layers, hidden 512, 8 heads, vocab 21128) and
a T5 v1.1 of the same size. 32-token prompts, 64 new tokens (no end token, so every run makes exactly
64), batch 1 and 8; greedy, beam search (4 beams) and top-k/top-p sampling. Prints tokens/s (generated
tokens of the whole batch, beams not counted), the ratio to HF, the share of HF's tokens each kexue
variant reproduces (fp32 must be 100 %; int8 shows what quantization changes on random weights), and
the batch-1 weight-streaming ceiling per precision. ``--compile`` adds kexue fp32 with
``kexue.tools.quantize.compile_model`` (dynamic shapes).

    PYTHONPATH=. python benchmarks/generation.py [--threads 1] [--repeats 3] [--families gpt t5] [--compile]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import save_result, time_round_robin  # noqa: E402

from kexue.generation import beam_search, decoding_state, greedy, sample
from kexue.hardware import describe
from kexue.tools.quantize import _dynamic_int8, compile_model, quantize
from kexue.models.gpt import GPT
from kexue.models.t5 import T5, T5Config

PROMPT, NEW = 32, 64
SIZES = {  # (hidden, heads, ffn, vocab): "small" is the issue's model; "tiny" isolates per-step overhead
    "small": (512, 8, 2048, 21128),
    "tiny": (64, 8, 256, 1000),
}


def build(family: str, size: str):
    d, h, ff, VOCAB = SIZES[size]
    torch.manual_seed(0)
    if family == "gpt":
        cfg = dict(vocab_size=VOCAB, n_embd=d, n_layer=6, n_head=h, n_inner=ff, n_positions=512, resid_pdrop=0.0,
                   embd_pdrop=0.0, attn_pdrop=0.0)
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)).eval()
        return hf, GPT.from_hf_gpt2(hf.state_dict(), cfg).eval()
    cfg = dict(vocab_size=VOCAB, d_model=d, d_kv=d // h, d_ff=ff // 2, num_layers=6, num_heads=h, dropout_rate=0.0,
               feed_forward_proj="gated-gelu", decoder_start_token_id=0)
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(tie_word_embeddings=False, **cfg)).eval()
    ours = T5(T5Config.from_dict(dict(cfg, tie_word_embeddings=False)))
    ours.load_hf_state_dict(hf.state_dict())
    return hf, ours.eval()


def weight_floor(model, repeats: int = 20) -> dict[str, float]:
    """Tokens/s ceiling at batch 1: every projection of one decoding step (all ``nn.Linear`` weights plus
    the LM head) streamed through bare matmuls with M = 1 and no model code. Each step must read all
    weights once, so no implementation of that precision beats this on the machine. fp32 in two layouts,
    ``nn.Linear``'s [out, in] and [in, out] (GPT-2 ``Conv1D``, kexue ``fp32-decode``), and int8 (the
    fbgemm kernel of ``quantize(model, "int8")``, 4x fewer bytes)."""
    mats = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    head = model.token.weight if hasattr(model, "token") else model.lm_head.weight
    mats.append(head.detach())
    transposed = [w.t().contiguous() for w in mats]
    int8 = [_dynamic_int8(w) for w in mats]
    xs = [torch.randn(1, w.shape[1]) for w in mats]
    out_in = lambda: [torch.nn.functional.linear(x, w) for x, w in zip(xs, mats)]  # noqa: E731
    in_out = lambda: [x @ w for x, w in zip(xs, transposed)]  # noqa: E731
    q = lambda: [m(x) for x, m in zip(xs, int8)]  # noqa: E731
    with torch.inference_mode():
        t = time_round_robin({"fp32 [out, in]": out_in, "fp32 [in, out]": in_out, "int8": q}, repeats, stat=min)
    return {k: 1 / v for k, v in t.items()}


def hf_generate(hf, ids, **kw):
    with torch.inference_mode():
        return hf.generate(ids, **kw)


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    return same / max(1, sum(len(r) for r in a))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=["gpt", "t5"])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--methods", nargs="+", default=["greedy", "beam4", "sample"])
    ap.add_argument("--compile", action="store_true", help="also time kexue fp32 under torch.compile")
    ap.add_argument("--nocache-batches", nargs="*", type=int, default=[1],
                    help="batch sizes at which to also time kexue fp32 without cache (slow: quadratic)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    transformers.logging.set_verbosity_error()
    header = (f"torch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}, "
              f"device {dev}, prompt {PROMPT}, new tokens {NEW}, model {args.size} {SIZES[args.size]} x 6 layers\n"
              f"hardware: {describe(dev)}")
    print(header)
    result = {"header": header, "rows": [], "ceiling": {}}
    for family in args.families:
        hf, ours = build(family, args.size)
        variants = {"kexue": ours}
        if dev.type == "cpu":
            floor = weight_floor(ours)
            mb = sum(p.numel() for p in ours.parameters()) * 4 / 1e6
            print(f"{family} weight-streaming ceiling at batch 1 ({mb:.0f} MB of fp32 weights per token, bare matmuls): "
                  + ", ".join(f"{k} {v:.0f} tok/s" for k, v in floor.items()), flush=True)
            result["ceiling"][family] = floor
            variants["kexue [in,out]"] = quantize(ours, "fp32-decode")
            variants["kexue int8"] = quantize(ours, "int8")
        else:
            print("kexue int8 and [in, out] are CPU-only: skipped on", dev)
        hf.to(dev)
        ours.to(dev)
        if args.compile:
            import copy

            variants["kexue compiled"] = compile_model(copy.deepcopy(ours), dynamic=True)
        names = list(variants) + ["hf"]
        print(f"{'model':<5} {'batch':>5} {'method':<7} " + " ".join(f"{n + ' tok/s':>21}" for n in names)
              + "   ratios to HF, tokens equal to HF's")
        vocab = SIZES[args.size][3]
        for b in args.batches:
            ids = torch.randint(5, vocab, (b, PROMPT), generator=torch.Generator().manual_seed(b)).to(dev)
            hf_kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, eos_token_id=None, pad_token_id=0)
            methods = {
                "greedy": (lambda s: greedy(s, NEW), dict(do_sample=False, num_beams=1)),
                "beam4": (lambda s: beam_search(s, NEW, None, 4), dict(do_sample=False, num_beams=4)),
                "sample": (lambda s: sample(s, NEW, top_k=50, top_p=0.9, generator=torch.Generator().manual_seed(0)),
                           dict(do_sample=True, top_k=50, top_p=0.9)),
            }
            for name, (run, kw) in methods.items():
                if name not in args.methods:
                    continue
                calls = {v: (lambda m=m: run(decoding_state(m, ids))) for v, m in variants.items()}
                calls["hf"] = lambda: hf_generate(hf, ids, **hf_kw, **kw)
                agree = {}
                if name != "sample":  # HF's tokens (prompt stripped for the LM) against each kexue variant
                    theirs = calls["hf"]()
                    theirs = (theirs[:, PROMPT:] if family == "gpt" else theirs[:, 1:]).tolist()
                    agree = {v: agreement(theirs, calls[v]()) for v in variants}
                # best of interleaved runs: load drifting on a shared machine hits all alike
                t = time_round_robin(calls, args.repeats, stat=min)
                if name != "sample" and b in args.nocache_batches:  # what the KV cache saves
                    t["kexue no-cache"] = time_round_robin(
                        {"nc": lambda: run(decoding_state(ours, ids, use_cache=False))}, 1, warmup=0)["nc"]
                tps = {k: b * NEW / v for k, v in t.items()}
                ratios = ", ".join(f"{v} {t['hf'] / t[v]:.2f}x" + (f" ({agree[v]:.0%})" if v in agree else "")
                                   for v in variants)
                if "kexue no-cache" in t:
                    ratios += f"; no cache {tps['kexue no-cache']:.0f} tok/s (cache speed-up {t['kexue no-cache'] / t['kexue']:.1f}x)"
                print(f"{family:<5} {b:>5} {name:<7} " + " ".join(f"{tps[n]:>21.0f}" for n in names) + "   " + ratios,
                      flush=True)
                result["rows"].append({"family": family, "batch": b, "method": name, "tokens_per_s": tps,
                                       "ratio_to_hf": {v: t["hf"] / t[v] for v in variants},
                                       "tokens_equal_to_hf": agree})
    save_result("generation", result, dev)
    return result


if __name__ == "__main__":
    main()

"""Generation speed: kexue (KV cache) vs HF ``generate`` (with cache) vs kexue without cache.

Same random weights on both sides: a GPT-2-layout LM (6 layers, hidden 512, 8 heads, vocab 21128) and
a T5 v1.1 of the same size. 32-token prompts, 64 new tokens (no end token, so every run makes exactly
64), batch 1 and 8; greedy, beam search (4 beams) and top-k/top-p sampling. Prints tokens/s (generated
tokens of the whole batch, beams not counted) and the ratio kexue / HF.

    PYTHONPATH=. python benchmarks/generation.py [--threads 1] [--repeats 3] [--families gpt t5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_round_robin  # noqa: E402

from kexue.generation import beam_search, decoding_state, greedy, sample
from kexue.models.gpt import GPT
from kexue.models.t5 import T5, T5Config

PROMPT, NEW = 32, 64
SIZES = {  # (hidden, heads, ffn, vocab): "small" is the model; "tiny" isolates per-step overhead
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
    the tied LM head) streamed through bare matmuls with M = 1 and no model code. Each step must read all
    weights once, so no fp32 implementation beats this on the machine. Two layouts: ``nn.Linear``'s
    [out, in] (kexue, HF T5) and GPT-2 ``Conv1D``'s [in, out] (HF GPT-2)."""
    mats = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    mats.append(model.token.weight.detach())
    transposed = [w.t().contiguous() for w in mats]
    xs = [torch.randn(1, w.shape[1]) for w in mats]
    out_in = lambda: [torch.nn.functional.linear(x, w) for x, w in zip(xs, mats)]  # noqa: E731
    in_out = lambda: [x @ w for x, w in zip(xs, transposed)]  # noqa: E731
    t = time_round_robin({"[out, in]": out_in, "[in, out]": in_out}, repeats, stat=min)
    return {k: 1 / v for k, v in t.items()}


def hf_generate(hf, ids, **kw):
    with torch.inference_mode():
        return hf.generate(ids, **kw)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=["gpt", "t5"])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--nocache-batches", nargs="*", type=int, default=[1],
                    help="batch sizes at which to also time kexue without cache (slow: quadratic)")
    ap.add_argument("--methods", nargs="+", default=["greedy", "beam4", "sample"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}, "
          f"prompt {PROMPT}, new tokens {NEW}, model {args.size} {SIZES[args.size]} x 6 layers")
    print(f"{'model':<5} {'batch':>5} {'method':<10} {'kexue tok/s':>12} {'HF tok/s':>10} {'ratio':>7} "
          f"{'no-cache tok/s':>15} {'cache speed-up':>15}")
    for family in args.families:
        hf, ours = build(family, args.size)
        if family == "gpt":
            floor = weight_floor(ours)
            mb = sum(p.numel() for p in ours.parameters()) * 4 / 1e6
            print(f"gpt weight-streaming ceiling at batch 1 ({mb:.0f} MB of fp32 weights per token, bare matmuls): "
                  + ", ".join(f"{k} {v:.0f} tok/s" for k, v in floor.items()), flush=True)
        vocab = SIZES[args.size][3]
        for b in args.batches:
            ids = torch.randint(5, vocab, (b, PROMPT), generator=torch.Generator().manual_seed(b))
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
                # best of interleaved runs: load drifting on a shared machine hits both sides alike
                t = time_round_robin({"kexue": lambda: run(decoding_state(ours, ids)),
                                      "hf": lambda: hf_generate(hf, ids, **hf_kw, **kw)}, args.repeats, stat=min)
                t_ours, t_hf = t["kexue"], t["hf"]
                t_nc = None
                if name != "sample" and b in args.nocache_batches:
                    t_nc = time_round_robin({"nc": lambda: run(decoding_state(ours, ids, use_cache=False))}, 1,
                                            warmup=0)["nc"]
                tps = lambda t: b * NEW / t  # noqa: E731
                nc = f"{tps(t_nc):>15.0f} {t_nc / t_ours:>14.1f}x" if t_nc else f"{'':>15} {'':>15}"
                print(f"{family:<5} {b:>5} {name:<10} {tps(t_ours):>12.0f} {tps(t_hf):>10.0f} {t_hf / t_ours:>6.2f}x {nc}",
                      flush=True)


if __name__ == "__main__":
    main()

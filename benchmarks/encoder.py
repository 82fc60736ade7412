"""Encoder inference speed: kexue BERT vs HF ``BertModel`` (sdpa) vs bert4torch, one process.

BERT-base-sized random weights (12 layers, hidden 768, 12 heads, FFN 3072), fp32, no grad.
Shapes: batch 8 x 128 tokens and 1 x 512. Prints tokens/s, ratios against HF and bert4torch, and
achieved GFLOP/s against a measured fp32 matmul peak. FLOPs per token per layer:
8H² (q, k, v, o) + 4HI (FFN) + 4LH (scores and weighted sum).

    python benchmarks/encoder.py [--layers 12] [--reps 5] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import matmul_peak_gflops, time_round_robin  # noqa: E402

from kexue.checkpoints import save_pretrained  # noqa: E402
from kexue.models import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(vocab_size=21128, hidden_size=768, num_hidden_layers=args.layers, num_attention_heads=12,
               intermediate_size=3072, max_position_embeddings=512, model_type="bert")
    torch.manual_seed(0)
    ours = build_model(cfg).eval()
    from transformers import BertModel

    with tempfile.TemporaryDirectory() as d:
        save_pretrained(ours, d)
        hf = BertModel.from_pretrained(d, attn_implementation="sdpa").eval()
        engines = {"kexue": ours, "hf": hf}
        try:
            from bert4torch.models import build_transformer_model

            b4t_cfg = Path(d) / "b4t.json"
            b4t_cfg.write_text(json.dumps({**cfg, "hidden_act": "gelu", "model": "bert"}))
            engines["bert4torch"] = build_transformer_model(config_path=str(b4t_cfg), verbose=0).eval()
        except Exception as e:  # keep the benchmark useful if the peer is missing
            print(f"bert4torch unavailable: {e!r}")
    dev = torch.device(args.device)
    for m in engines.values():
        m.to(dev)
    peak = matmul_peak_gflops() if dev.type == "cpu" else float("nan")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}, "
          f"fp32 matmul peak {peak:.1f} GFLOP/s")
    H, I, layers = 768, 3072, args.layers
    for batch, length in [(8, 128), (1, 512)]:
        ids = torch.randint(1, 21128, (batch, length), device=dev)
        segs = torch.zeros_like(ids)
        mask = torch.ones_like(ids)
        calls = {
            "kexue": lambda: ours(ids, segs, mask),
            "hf": lambda: engines["hf"](input_ids=ids, token_type_ids=segs, attention_mask=mask),
        }
        if "bert4torch" in engines:
            calls["bert4torch"] = lambda: engines["bert4torch"]([ids, segs])
        with torch.inference_mode():
            with torch.no_grad():
                a = ours(ids, segs, mask).hidden
                b = engines["hf"](input_ids=ids, token_type_ids=segs, attention_mask=mask).last_hidden_state
            secs = time_round_robin(calls, reps=args.reps)
        tokens = batch * length
        flops = tokens * layers * (8 * H * H + 4 * H * I + 4 * length * H)
        print(f"\nbatch {batch} x {length} tokens  (kexue vs HF max |diff| {float((a - b).abs().max()):.1e})")
        for name, s in secs.items():
            gf = flops / s / 1e9
            print(f"  {name:<11} {tokens / s:>9.0f} tok/s  {s * 1e3:8.1f} ms  {gf:7.1f} GFLOP/s"
                  f"  ({gf / peak:.0%} of peak)" if peak == peak else "")
        for peer in [k for k in secs if k != "kexue"]:
            print(f"  speed ratio kexue / {peer}: {secs[peer] / secs['kexue']:.2f}x")


if __name__ == "__main__":
    main()

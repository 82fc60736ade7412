"""Encoder inference speed: kexue fp32 / int8 / [in, out] / bf16 (native-bf16 CPUs) / compiled and kexue's own ONNX graph
in ONNX Runtime (fp32 / int8, what ``kexue.load`` runs where faster) vs HF ``BertModel`` (sdpa), bert4torch and ONNX
Runtime fp32 / int8 on HF's graph, one process, the same weights.

BERT-base-sized random weights (12 layers, hidden 768, 12 heads, FFN 3072), no grad. Shapes: batch
8 x 128 tokens and 1 x 512. Prints tokens/s, ratios against every peer, each peer's max |Δ hidden| from
kexue fp32 (a fast wrong answer cannot pass as speed), and achieved GFLOP/s against a measured fp32
matmul peak. FLOPs per token per layer: 8H² (q, k, v, o) + 4HI (FFN) + 4LH (scores and weighted sum).
ONNX Runtime runs the HF model exported with ``torch.onnx.export``; its int8 is ORT's own dynamic
quantization (``onnxruntime.quantization.quantize_dynamic``, int8 weights).

    python benchmarks/encoder.py [--layers 12] [--reps 3] [--threads N] [--no-compile] [--device cuda]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import matmul_peak_gflops, save_result, time_round_robin  # noqa: E402

from kexue.models.checkpoints import save_pretrained  # noqa: E402
from kexue.hardware import describe, native_bf16  # noqa: E402
from kexue.models import build_model  # noqa: E402
from kexue.tools.quantize import compile_model, quantize, to_bf16  # noqa: E402


def onnx_sessions(hf, workdir: Path, threads: int) -> dict:
    """ORT fp32 and dynamic-int8 sessions of the HF model (same weights)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Hidden(torch.nn.Module):  # keyword call: HF's forward has many optional arguments
        def __init__(self):
            super().__init__()
            self.hf = hf  # a submodule, so its weights export as initializers

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.hf(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state

    fp32, int8 = workdir / "bert.onnx", workdir / "bert.int8.onnx"
    ids = torch.ones(1, 16, dtype=torch.long)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Hidden().eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(fp32), dynamo=False,
                          input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["hidden"],
                          dynamic_axes={n: {0: "b", 1: "l"} for n in ["input_ids", "attention_mask", "token_type_ids"]},
                          opset_version=17)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return {name: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            for name, p in [("onnxruntime", fp32), ("onnxruntime int8", int8)]}


def kexue_onnx(model, workdir: Path) -> dict:
    """kexue's own graph of the model (``kexue export onnx``'s EncoderGraph) in ONNX Runtime, fp32 and int8
    (per output column, the export's default): the paths ``kexue.load`` runs when they are faster."""
    from kexue.tools.onnx_export import EncoderGraph, OnnxEncoder, OnnxGraph, export_graph, quantize_graph

    ids = torch.ones(2, 16, dtype=torch.long)
    fp32 = export_graph(EncoderGraph(model), {"input_ids": ids, "segment_ids": torch.zeros_like(ids),
                                              "attention_mask": torch.ones_like(ids)}, workdir / "kexue.onnx", ["hidden"],
                        model.config.max_position_embeddings)
    int8 = quantize_graph(fp32, workdir / "kexue_int8.onnx")
    return {"kexue onnxruntime": OnnxEncoder(OnnxGraph(fp32), model.config),
            "kexue onnxruntime int8": OnnxEncoder(OnnxGraph(int8), model.config)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile engine (minutes to compile)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = dict(vocab_size=21128, hidden_size=768, num_hidden_layers=args.layers, num_attention_heads=12,
               intermediate_size=3072, max_position_embeddings=512, model_type="bert")
    torch.manual_seed(0)
    ours = build_model(cfg).eval()
    from transformers import BertModel

    engines: dict[str, object] = {}
    notes = []
    with tempfile.TemporaryDirectory() as d:
        save_pretrained(ours, d)
        hf = BertModel.from_pretrained(d, attn_implementation="sdpa").eval()
        try:
            from bert4torch.models import build_transformer_model

            b4t_cfg = Path(d) / "b4t.json"
            b4t_cfg.write_text(json.dumps({**cfg, "hidden_act": "gelu", "model": "bert"}))
            b4t = build_transformer_model(config_path=str(b4t_cfg), checkpoint_path=None, verbose=0).eval()
            b4t.load_state_dict(_b4t_state(b4t, hf), strict=True)
            engines["bert4torch"] = b4t
        except Exception as e:  # keep the benchmark useful if the peer is missing
            notes.append(f"bert4torch unavailable: {repr(e)[:300]}")
        sessions, kexue_ort = {}, {}
        if dev.type == "cpu":
            try:
                sessions = onnx_sessions(hf, Path(d), torch.get_num_threads())
                kexue_ort = kexue_onnx(ours, Path(d))
            except Exception as e:
                notes.append(f"onnxruntime unavailable: {repr(e)[:300]}")
        else:
            notes.append("onnxruntime and kexue int8 are CPU-only here: skipped on " + str(dev))
    variants = {"kexue": ours}
    if dev.type == "cpu":
        variants["kexue int8"] = quantize(ours, "int8")
        variants["kexue fp32 [in,out]"] = quantize(ours, "fp32-decode")
        if native_bf16():  # AVX512_BF16 / AMX: the path kexue.load(precision="bf16" or "auto") runs
            variants["kexue bf16"] = to_bf16(ours)
        variants.update(kexue_ort)
    ours.to(dev)
    hf.to(dev)
    for m in engines.values():
        m.to(dev)
    if dev.type == "cuda":  # what a GPU user runs: bf16 weights and activations, both engines alike
        variants["kexue bf16"] = copy.deepcopy(ours).to(torch.bfloat16)
        engines["hf bf16"] = copy.deepcopy(hf).to(torch.bfloat16)
        args.reps = max(args.reps, 20)  # milliseconds per call on a GPU: more samples, same wall time
    if not args.no_compile:
        t0 = time.perf_counter()
        variants["kexue compiled"] = compile_model(copy.deepcopy(ours), dynamic=False)
        compile_note = "compiled per shape (dynamic=False)"
    peak = matmul_peak_gflops() if dev.type == "cpu" else float("nan")
    header = (f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}, "
              f"fp32 matmul peak {peak:.1f} GFLOP/s\nhardware: {describe(dev)}")
    print(header)
    for n in notes:
        print(n)
    result = {"header": header, "peak_gflops": peak, "shapes": {}}
    H, I, layers = 768, 3072, args.layers
    for batch, length in [(8, 128), (1, 512)]:
        ids = torch.randint(1, 21128, (batch, length), device=dev, generator=None)
        segs, mask = torch.zeros_like(ids), torch.ones_like(ids)
        feeds = {"input_ids": ids.cpu().numpy(), "attention_mask": mask.cpu().numpy(), "token_type_ids": segs.cpu().numpy()}
        calls = {name: (lambda m=m: m(ids, segs, mask).hidden) for name, m in variants.items()}
        calls["hf"] = lambda: hf(input_ids=ids, token_type_ids=segs, attention_mask=mask).last_hidden_state
        if "hf bf16" in engines:
            calls["hf bf16"] = lambda: engines["hf bf16"](input_ids=ids, token_type_ids=segs,
                                                          attention_mask=mask).last_hidden_state
        if "bert4torch" in engines:
            calls["bert4torch"] = lambda: engines["bert4torch"]([ids, segs])
        for name, s in sessions.items():
            calls[name] = lambda s=s: torch.from_numpy(s.run(None, feeds)[0])
        with torch.inference_mode():
            if "kexue compiled" in calls:
                t0 = time.perf_counter()
                calls["kexue compiled"]()
                print(f"  ({compile_note}: first call {time.perf_counter() - t0:.0f} s)")
            ref = calls["kexue"]()
            diffs = {n: float((f().to(ref.device).float() - ref).abs().max()) for n, f in calls.items() if n != "kexue"}
            secs = time_round_robin(calls, reps=args.reps, stat=min)  # best of interleaved runs: load spikes hit one
        tokens = batch * length
        flops = tokens * layers * (8 * H * H + 4 * H * I + 4 * length * H)
        print(f"\nbatch {batch} x {length} tokens (max |hidden| {float(ref.abs().max()):.1f})")
        rows = {}
        for name, s in secs.items():
            gf = flops / s / 1e9
            diff = f"max |Δ| vs kexue {diffs[name]:.1e}" if name in diffs else "reference"
            print(f"  {name:<20} {tokens / s:>8.0f} tok/s {s * 1e3:8.1f} ms {gf:7.1f} GFLOP/s ({gf / peak:4.0%} of peak)  {diff}")
            rows[name] = {"tokens_per_s": tokens / s, "ms": s * 1e3, "gflops": gf, "max_abs_diff": diffs.get(name, 0.0)}
        for ours_name in [n for n in secs if n.startswith("kexue")]:
            ratios = ", ".join(f"{p} {secs[p] / secs[ours_name]:.2f}x" for p in secs if not p.startswith("kexue"))
            print(f"  speed ratio {ours_name} / peer: {ratios}")
        result["shapes"][f"{batch}x{length}"] = rows
    save_result("encoder", result, dev)
    return result


def _b4t_state(b4t, hf) -> dict:
    """bert4torch's names for the HF weights (its own HF-name mapping, so the same weights run)."""
    mapping = b4t.variable_mapping()
    hf_state = {f"bert.{k}": v for k, v in hf.state_dict().items()}
    state = b4t.state_dict()
    for ours, theirs in mapping.items():
        if ours in state and theirs in hf_state:
            state[ours] = hf_state[theirs]
    return state


if __name__ == "__main__":
    main()

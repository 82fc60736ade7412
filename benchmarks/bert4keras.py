"""bert4keras itself (TensorFlow, CPU) vs kexue on the same weights: BERT encoder forward and UniLM beam search.

bert4keras builds a BERT with seeded random weights and saves a real TF checkpoint; ``kexue convert
bert4keras``'s converter turns it into kexue folders (encoder, and UniLM with the MLM head); both sides
then load those weights. bert4keras runs in ``.venv-bert4keras`` in a subprocess
(``benchmarks/_bert4keras_side.py``) that answers one command at a time, so the two sides are timed
round-robin (never at once) as the other benchmarks time their peers in one process.

* Encoder: the last layer's hidden states, batch 8 x 128 and 1 x 512 (``model.predict`` for bert4keras).
* UniLM beam search (SimBERT-style: source = segment 0, generated tokens = segment 1), 4 beams, 32 new
  tokens, batch 1, end token disabled so both make exactly 32: bert4keras's
  ``AutoRegressiveDecoder.beam_search`` runs the whole prefix through the model at every step (no KV
  cache); kexue's ``generate(..., rule="bert4keras")`` is the same search over a KV-cached decoding
  state. kexue without cache is timed once too, to split the gain between the cache and the rest.

Prints times, kexue / bert4keras speed ratios, the max |Δ| of the hidden states and whether the beam
outputs' token ids agree (they should, up to exact score ties). Both sides are single-process with the
same thread count (torch intra- and inter-op threads, TF intra- and inter-op threads).
``--device cuda`` moves only kexue to the GPU (this TensorFlow is a CPU build): the ratios then compare
a GPU with a CPU, and the output says so.

    python benchmarks/bert4keras.py [--layers 12] [--threads 1] [--reps 3] [--beam-reps 2] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import save_result, time_round_robin  # noqa: E402

from kexue.generation import generate  # noqa: E402
from kexue.hardware import describe  # noqa: E402
from kexue.models import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
B4K_VENV = REPO / ".venv-bert4keras"
SIDE = Path(__file__).resolve().with_name("_bert4keras_side.py")
BASE = dict(hidden=768, heads=12, ffn=3072, vocab=21128, shapes=((8, 128), (1, 512)), source=32, new_tokens=32)
TINY = dict(hidden=64, heads=4, ffn=128, vocab=1000, shapes=((2, 16),), source=12, new_tokens=8)


class Bert4kerasSide:
    """The bert4keras subprocess: ``side(op, **kw)`` sends one command and waits for its reply."""

    def __init__(self, workdir: Path, threads: int):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(TF_KERAS="1", TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        self.log = open(workdir / "bert4keras_side.log", "w+")
        self.proc = subprocess.Popen([str(B4K_VENV / "bin" / "python"), str(SIDE), str(workdir), str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env)
        self.info = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"the bert4keras side stopped:\n{self.log.read()[-4000:]}")
        return json.loads(line)

    def __call__(self, op: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


def convert(workdir: Path) -> dict[str, Path]:
    """``kexue convert bert4keras`` of bert4keras's checkpoint as an encoder and as UniLM (MLM head); kexue
    reads the TF checkpoint itself (no TensorFlow in this process)."""
    from kexue.models.bert4keras import convert as convert_bert4keras

    outs = {app: workdir / f"kexue_{app}" for app in ("encoder", "unilm")}
    for app, out in outs.items():
        convert_bert4keras(workdir / "bert" / "bert_config.json", workdir / "bert" / "model.ckpt", "bert", out, app)
    return outs


def make_inputs(vocab: int, shapes, source: int) -> dict[str, np.ndarray]:
    """Random token ids (no padding: id 0 is bert4keras's padding), segment 0; the beam source likewise."""
    rng = np.random.RandomState(0)
    arrays = {}
    for b, n in shapes:
        arrays[f"ids_{b}x{n}"] = rng.randint(1, vocab, (b, n)).astype(np.int32)
        arrays[f"segs_{b}x{n}"] = np.zeros((b, n), np.int32)
    arrays["beam_ids"] = rng.randint(1, vocab, (1, source)).astype(np.int32)
    arrays["beam_segs"] = np.zeros((1, source), np.int32)
    return arrays


def run(layers: int, hidden: int, heads: int, ffn: int, vocab: int, shapes, source: int, new_tokens: int,
        beams: int = 4, threads: int = 1, reps: int = 3, beam_reps: int = 2, device: str = "cpu",
        timing: bool = True) -> dict:
    """Both sides on the same weights; ``timing=False`` runs only the output comparison (no times)."""
    dev = torch.device(device)
    config = {"vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": ffn, "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    result = {"layers": layers, "hidden": hidden, "threads": threads, "device": str(dev), "encoder": {}}
    with tempfile.TemporaryDirectory(prefix="kexue-bench-bert4keras-") as d:
        work = Path(d)
        data = make_inputs(vocab, shapes, source)
        np.savez(work / "inputs.npz", **data)
        (work / "setup.json").write_text(json.dumps({"config": config, "seed": 0, "beams": beams,
                                                     "new_tokens": new_tokens}))
        t0 = time.perf_counter()
        side = Bert4kerasSide(work, threads)
        try:
            folders = convert(work)
            result["bert4keras_side"] = side.info
            result["setup_s"] = time.perf_counter() - t0
            enc = build_model(checkpoint=folders["encoder"]).eval().to(dev)
            unilm = build_model(checkpoint=folders["unilm"]).eval().to(dev)
            sync = (lambda x: (torch.cuda.synchronize(), x)[1]) if dev.type == "cuda" else (lambda x: x)  # time it all
            for b, n in shapes:
                key = f"{b}x{n}"
                ids = torch.from_numpy(data[f"ids_{key}"]).long().to(dev)
                segs = torch.from_numpy(data[f"segs_{key}"]).long().to(dev)
                calls = {"kexue": lambda: sync(enc(ids, segs).hidden), "bert4keras": lambda: side("encode", shape=key)}
                with torch.inference_mode():
                    ours = calls["kexue"]().float().cpu().numpy()  # these two calls are also the warm-up
                    side("encode", shape=key, save=True)
                    theirs = np.load(work / f"bert4keras_encode_{key}.npz")["hidden"]
                    row = {"max_abs_diff": float(np.abs(ours - theirs).max()),
                           "max_abs_hidden": float(np.abs(theirs).max())}
                    if timing:
                        row["s"] = time_round_robin(calls, reps=reps, warmup=0, stat=min)
                result["encoder"][key] = row
            src = torch.from_numpy(data["beam_ids"]).long().to(dev)
            seg = torch.from_numpy(data["beam_segs"]).long().to(dev)

            def ours_beam(use_cache=True):
                return generate(unilm, src, segment_ids=seg, max_new_tokens=new_tokens, eos_id=None,
                                num_beams=beams, rule="bert4keras", use_cache=use_cache)[0]

            calls = {"kexue": ours_beam, "bert4keras": lambda: side("beam")}
            ours = ours_beam()
            side("beam", save=True)
            theirs = np.load(work / "bert4keras_beam_.npz")["ids"].tolist()
            row = {"kexue_ids": ours, "bert4keras_ids": theirs, "ids_equal": ours == theirs,
                   "source": source, "new_tokens": new_tokens, "beams": beams,
                   **unilm_diff(unilm, side, data, ours, work)}
            if timing:
                row["s"] = time_round_robin(calls, reps=beam_reps, warmup=0, stat=min)
                t0 = time.perf_counter()
                row["kexue_no_cache_ids_equal"] = ours_beam(use_cache=False) == ours
                row["s"]["kexue no-cache"] = time.perf_counter() - t0
            result["unilm_beam"] = row
        finally:
            side.close()
    return result


def unilm_diff(unilm, side, data: dict, output: list[int], work: Path) -> dict:
    """Both UniLMs' token probabilities over source + decoded tokens in one pass: a random model's beam
    often repeats one token, so the equal token ids alone would check little of the model."""
    ids = np.concatenate([data["beam_ids"], np.array([output], np.int32)], 1)
    segs = np.concatenate([data["beam_segs"], np.ones((1, len(output)), np.int32)], 1)
    side("unilm", ids=ids.tolist(), segs=segs.tolist(), save=True)
    theirs = np.load(work / "bert4keras_unilm_.npz")["probs"].astype(np.float64)
    dev = next(unilm.parameters()).device
    with torch.inference_mode():
        logits = unilm(torch.from_numpy(ids).long().to(dev), torch.from_numpy(segs).long().to(dev)).logits
    ours = logits.float().softmax(-1).double().cpu().numpy()  # float32, as TF computes it
    return {"max_abs_diff_probs": float(np.abs(ours - theirs).max()),
            "max_abs_diff_log_probs": float(np.abs(np.log(ours) - np.log(theirs)).max()),
            "distinct_ids": len(set(output))}


def report(result: dict) -> list[str]:
    """The printed lines: times, kexue / bert4keras speed ratios (bert4keras's time / kexue's) and differences."""
    lines = []
    for key, row in result["encoder"].items():
        s = row["s"]
        lines.append(f"encoder {key:>7}: kexue {s['kexue'] * 1e3:8.1f} ms, bert4keras {s['bert4keras'] * 1e3:8.1f} ms,"
                     f" kexue / bert4keras {s['bert4keras'] / s['kexue']:.2f}x;  max |Δhidden| "
                     f"{row['max_abs_diff']:.1e} (max |hidden| {row['max_abs_hidden']:.1f})")
    row = result["unilm_beam"]
    s = row["s"]
    lines.append(f"UniLM beam {row['beams']}, {row['source']}-token source, {row['new_tokens']} new tokens, batch 1: "
                 f"kexue {s['kexue']:.2f} s, bert4keras {s['bert4keras']:.2f} s, kexue / bert4keras "
                 f"{s['bert4keras'] / s['kexue']:.2f}x;  token ids equal: {row['ids_equal']} ({row['distinct_ids']} "
                 f"distinct); UniLM probabilities on that sequence: max |Δp| {row['max_abs_diff_probs']:.1e}, "
                 f"max |Δlog p| {row['max_abs_diff_log_probs']:.1e}")
    no_cache = s["kexue no-cache"]
    lines.append(f"  kexue without KV cache (1 run) {no_cache:.2f} s: / bert4keras {s['bert4keras'] / no_cache:.2f}x, "
                 f"cache speed-up {no_cache / s['kexue']:.1f}x, same ids: {row['kexue_no_cache_ids_equal']}")
    if not row["ids_equal"]:
        lines.append(f"  kexue {row['kexue_ids']}\n  bert4keras {row['bert4keras_ids']}")
    return lines


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12, help="BERT-base width with this many layers (default 12)")
    ap.add_argument("--threads", type=int, default=1, help="torch and TF threads, intra- and inter-op alike")
    ap.add_argument("--reps", type=int, default=3, help="encoder: best of this many interleaved runs")
    ap.add_argument("--beam-reps", type=int, default=2, help="beam search: best of this many interleaved runs")
    ap.add_argument("--device", default="cpu", help="kexue's device (bert4keras stays on the CPU)")
    args = ap.parse_args(argv)
    if not (B4K_VENV / ".kexue-installed").exists():
        print(f"benchmarks/bert4keras.py: {B4K_VENV} is missing; create it with `make bert4keras-oracle`",
              file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    dev = torch.device(args.device)
    result = run(args.layers, threads=args.threads, reps=args.reps, beam_reps=args.beam_reps, device=args.device,
                 **BASE)
    info = result["bert4keras_side"]
    header = (f"kexue: torch {torch.__version__}, intra-op threads {torch.get_num_threads()}, inter-op "
              f"{torch.get_num_interop_threads()}, device {dev}\nbert4keras 0.11.5: TensorFlow {info['tensorflow']} "
              f"CPU ({'graph' if info['graph_mode'] else 'eager'} mode), intra-op threads {info['intra_op_threads']}, "
              f"inter-op {info['inter_op_threads']}\nmodel: BERT-base width (hidden 768, 12 heads, FFN 3072, vocab "
              f"21128) x {args.layers} layers, random weights written by bert4keras, read by kexue convert bert4keras"
              f"\nhardware: {describe(dev)}")
    if dev.type != "cpu":
        header += f"\nnote: only kexue runs on {dev}; bert4keras runs on the CPU, so the ratios compare devices"
    result["header"] = header
    print(header)
    print("\n".join(report(result)))
    save_result("bert4keras", result)
    return result


if __name__ == "__main__":
    main()

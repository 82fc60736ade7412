"""What a user of ``kexue embed`` feels: ``kexue.load(DIR).embed(texts)`` on every inference path beside
sentence-transformers' ``encode``, one process, the same all-MiniLM-L6-v2 weights, real sentences.

Corpus: STS-B en test sentences and the Chinese sets (STS-B zh test, LCQMC, ATEC; ../shared/data), shuffled
together: lengths from a few tokens to 100+, as a mixed user corpus is. Both sides batch 64 sentences
(sentence-transformers sorts by length itself; kexue's ``embed`` cuts length buckets).

kexue paths (``kexue.load(DIR, backend=..., precision=...)``, the folder exported with ``kexue export onnx``):
torch fp32 / bf16 (native bf16 CPUs) / int8, onnxruntime fp32 / int8, and what ``backend="auto"`` picks for
fp32 (the default) and for ``precision="auto"``. Peers: sentence-transformers fp32 (PyTorch), bf16 (its model
cast to bf16), int8 (``torch.ao.quantization.quantize_dynamic`` on its model, the usual recipe), and its ONNX
backend when it loads offline (it needs optimum). Every output's max |Δ| and min cosine to kexue torch fp32
are printed (a fast wrong answer cannot pass as speed), with the CPU flags and thread count.

    PYTHONPATH=. python benchmarks/embed_users.py [--sentences 1200] [--reps 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import random
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import save_result, time_round_robin  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import kexue  # noqa: E402
from kexue.cli import main as cli  # noqa: E402
from kexue.data import shipped as datasets  # noqa: E402
from kexue.hardware import describe, native_bf16  # noqa: E402
from kexue.models.pretrained import minilm_path  # noqa: E402

BATCH = 64


def corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct real sentences: half STS-B en test, half Chinese (STS-B zh test, LCQMC, ATEC), shuffled."""
    en = sorted({s for p in datasets.sts_en("test") for s in (p.a, p.b)})
    zh = sorted({s for p in datasets.sts_zh("test") for s in (p.a, p.b)})
    root = datasets.data_root() / "sim-zh"
    for name in ("LCQMC", "ATEC"):
        for line in (root / f"{name}.valid.data").read_text(encoding="utf-8").splitlines():
            zh += line.split("\t")[:2]
    rng = random.Random(seed)
    zh = sorted(set(zh))
    rng.shuffle(en)
    rng.shuffle(zh)
    out = en[: n - n // 2] + zh[: n // 2]
    rng.shuffle(out)
    return out


def model_folder(workdir: Path, layers: int | None = None) -> Path:
    """A copy of the shipped all-MiniLM-L6-v2 folder (kexue export writes into it); ``layers``: keep the
    first layers only (a small model for the agreement test)."""
    out = workdir / "minilm"
    shutil.copytree(minilm_path(), out)
    if layers is not None:
        import json

        from safetensors.torch import load_file, save_file

        config = json.loads((out / "config.json").read_text())
        config["num_hidden_layers"] = layers
        (out / "config.json").write_text(json.dumps(config))
        state = load_file(str(out / "model.safetensors"))
        keep = {k: v for k, v in state.items()
                if ".layer." not in k or int(k.split(".layer.")[1].split(".")[0]) < layers}
        save_file(keep, str(out / "model.safetensors"))
    return out


def peers(folder: Path, texts: list[str]) -> tuple[dict, list[str]]:
    """sentence-transformers' encode on each precision that runs here (fp32, bf16, int8, ONNX)."""
    from sentence_transformers import SentenceTransformer

    notes = []
    st = SentenceTransformer(str(folder), device="cpu")
    calls = {"sentence-transformers fp32": lambda: st.encode(texts, batch_size=BATCH, convert_to_tensor=True,
                                                              normalize_embeddings=True)}
    if native_bf16():
        st16 = copy.deepcopy(st).to(torch.bfloat16)
        calls["sentence-transformers bf16"] = lambda: st16.encode(texts, batch_size=BATCH, convert_to_tensor=True,
                                                                  normalize_embeddings=True).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(st), {torch.nn.Linear}, dtype=torch.qint8)
    calls["sentence-transformers int8 (torch.ao)"] = lambda: st8.encode(texts, batch_size=BATCH, convert_to_tensor=True,
                                                                        normalize_embeddings=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sto = SentenceTransformer(str(folder), device="cpu", backend="onnx")
        calls["sentence-transformers onnx"] = lambda: sto.encode(texts, batch_size=BATCH, convert_to_tensor=True,
                                                                 normalize_embeddings=True)
    except Exception as e:  # noqa: BLE001 - the peer is optional; say why it is missing
        notes.append(f"sentence-transformers ONNX backend unavailable here: {str(e).splitlines()[0][:200]}")
    return calls, notes


def kexue_paths(folder: Path, quick: bool = False) -> dict:
    """One predictor per kexue path, each through kexue.load as a user gets it."""
    paths = [("torch", "fp32"), ("onnxruntime", "fp32"), ("torch", "int8"), ("onnxruntime", "int8")]
    paths += [("torch", "bf16")] if native_bf16() else []
    if quick:  # the agreement test: the fp32 paths and the default choice
        paths = paths[:2]
    out = {f"kexue {b} {q}": kexue.load(folder, backend=b, precision=q) for b, q in paths}
    out["kexue default (auto fp32)"] = kexue.load(folder)
    if not quick:
        out["kexue precision=auto"] = kexue.load(folder, precision="auto")
    return out


def run(n: int = 1200, reps: int = 2, timing: bool = True, layers: int | None = None, quick: bool = False) -> dict:
    """The benchmark's numbers; ``timing=False``: outputs only, ``quick``: the fp32 paths only, ``layers``: a
    smaller MiniLM (the agreement test)."""
    texts = corpus(n)
    with tempfile.TemporaryDirectory() as d:
        os.environ["KEXUE_CACHE"] = str(Path(d) / "cache")  # a fresh calibration: the choice on this machine now
        folder = model_folder(Path(d), layers)
        with contextlib.redirect_stdout(io.StringIO()):  # the export's JSON summary
            if cli(["export", "onnx", str(folder)]) != 0:
                raise RuntimeError("kexue export onnx failed")
        predictors = kexue_paths(folder, quick)
        tok = predictors["kexue torch fp32"].tokenizer
        lengths = [len(tok.encode(t, maxlen=256)[0]) for t in texts]
        calls = {name: (lambda p=p: p.embed(texts)) for name, p in predictors.items()}
        theirs, notes = peers(folder, texts)
        calls.update(theirs)
        with torch.inference_mode():
            ref = calls["kexue torch fp32"]()
            outputs = {name: f().float() for name, f in calls.items()}
            secs = time_round_robin(calls, reps=reps, stat=min) if timing else {}
    rows = {}
    for name, v in outputs.items():
        cos = torch.nn.functional.cosine_similarity(v, ref, dim=-1)
        rows[name] = {"max_abs_diff": float((v - ref).abs().max()), "cosine_min": float(cos.min())}
        if name in predictors:
            rows[name]["why"] = str(predictors[name].path)
            rows[name]["path"] = str(predictors[name].path.name)
        if secs:
            rows[name].update(seconds=secs[name], sentences_per_s=len(texts) / secs[name])
    return {"sentences": len(texts), "tokens_mean": sum(lengths) / len(lengths), "tokens_max": max(lengths), "threads": torch.get_num_threads(), "hardware": describe(),
            "notes": notes, "rows": rows}


def report(result: dict) -> None:
    print(f"hardware: {result['hardware']}\nthreads {result['threads']}; {result['sentences']} sentences "
          f"(STS-B en test + Chinese STS-B / LCQMC / ATEC; {result['tokens_mean']:.0f} tokens on average, "
          f"longest {result['tokens_max']}), batch {BATCH}")
    for note in result["notes"]:
        print(note)
    rows = result["rows"]
    base = rows["sentence-transformers fp32"].get("seconds")
    print("| engine | path run | sentences/s | vs ST fp32 | max abs diff vs kexue fp32 | min cosine |")
    print("|---|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        speed = f"{r['sentences_per_s']:.0f} | {base / r['seconds']:.2f}x" if base else "- | -"
        print(f"| {name} | {r.get('path', '')} | {speed} | {r['max_abs_diff']:.1e} | {r['cosine_min']:.5f} |")
    for name in ("kexue default (auto fp32)", "kexue precision=auto"):
        if name in rows:
            print(f"{name}: {rows[name]['why']}")
    if base:
        ours = {n: r for n, r in rows.items() if n.startswith("kexue")}
        for n, r in ours.items():
            ratios = ", ".join(f"{p} {rows[p]['seconds'] / r['seconds']:.2f}x" for p in rows if not p.startswith("kexue"))
            print(f"  {n}: {ratios}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=1200)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args.sentences, args.reps)
    report(result)
    save_result("embed_users", result)
    return result


if __name__ == "__main__":
    main()

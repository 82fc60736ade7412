"""NER predictions per second as a user gets them: ``kexue.load(DIR).predict(texts)`` on every inference path
beside bert4torch (its BERT + its ``GlobalPointer``), one process, the same weights, People's Daily sentences.

The model: a BERT-shaped GlobalPointer tagger trained for a few steps by ``kexue ner --checkpoint`` on the
shipped all-MiniLM-L6-v2 (6 layers, hidden 384; its uncased vocabulary holds the CJK characters), so the
weights are real and the spans are not all empty; ``--from-scratch`` uses the recipe's small BERT instead.
Speed is what is measured: predictions/s from raw text to entity spans.

bert4torch's side is written as its NER examples are: characters to ids with its ``Tokenizer``
(lowercased, as kexue's character ids are), batches of 64 in input order padded by ``sequence_padding``,
``build_transformer_model`` + ``GlobalPointer`` (its RoPE is the same adjacent-pair rotation), the
[CLS]/[SEP] rows and columns masked, spans with a score > 0. Its weights come from the kexue folder
(the HF-layout backbone through bert4torch's own name mapping, the head's dense layer as is).

Every path's entities are compared with kexue torch fp32 (share of sentences with identical entities) and
its span scores' max |Δ| where both compute them; CPU flags and threads are printed.

    PYTHONPATH=. python benchmarks/ner_users.py [--sentences 600] [--train 200] [--reps 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import save_result, time_round_robin  # noqa: E402
from embed_users import kexue_paths  # noqa: E402  (every inference path, through kexue.load)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from kexue.cli import main as cli  # noqa: E402
from kexue.data import shipped as datasets  # noqa: E402
from kexue.hardware import describe  # noqa: E402
from kexue.models.pretrained import minilm_path  # noqa: E402

BATCH = 64


def train_folder(workdir: Path, n_train: int, from_scratch: bool) -> Path:
    """A GlobalPointer NER folder trained for one epoch on ``n_train`` People's Daily sentences."""
    out = workdir / "ner"
    args = ["ner", "--out", str(out), "--no-progress", "--epochs", "1", "--limit", str(n_train), "--maxlen", "128",
            "--threads", str(torch.get_num_threads())]
    if from_scratch:
        args += ["--family", "bert"]
    else:
        backbone = workdir / "minilm"
        shutil.copytree(minilm_path(), backbone)
        args += ["--checkpoint", str(backbone), "--lr", "1e-4"]
    with contextlib.redirect_stdout(io.StringIO()):
        if cli(args) != 0:
            raise RuntimeError("kexue ner failed")
    return out


class Bert4TorchNER:
    """bert4torch's BERT + GlobalPointer with the kexue folder's weights, run as its examples run it."""

    def __init__(self, folder: Path):
        from bert4torch.layers import GlobalPointer
        from bert4torch.models import build_transformer_model
        from bert4torch.tokenizers import Tokenizer
        from safetensors.torch import load_file
        from transformers import BertModel

        from encoder import _b4t_state

        from kexue.recipes.folder import read_task

        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        task = read_task(folder)  # labels and settings, wherever this folder format keeps them
        if task["settings"]["head"] != "globalpointer":
            raise ValueError("the bert4torch side implements the GlobalPointer head")
        with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b4t_config = Path(d) / "config.json"  # bert4torch's config: the same numbers, its own keys
            b4t_config.write_text(json.dumps({**config, "model": "bert", "hidden_act": config.get("hidden_act", "gelu")}))
            hf = BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
            self.bert = build_transformer_model(config_path=str(b4t_config), checkpoint_path=None, verbose=0).eval()
        self.bert.load_state_dict(_b4t_state(self.bert, hf), strict=True)
        self.types = task["labels"]
        self.gp = GlobalPointer(config["hidden_size"], len(self.types), task["settings"]["head_size"]).eval()
        head = load_file(str(folder / "head.safetensors"))
        self.gp.load_state_dict({"dense.weight": head["head.dense.weight"], "dense.bias": head["head.dense.bias"]},
                                strict=False)
        self.tokenizer = Tokenizer(str(folder / "vocab.txt"), do_lower_case=True)
        self.maxlen = task["settings"]["maxlen"]

    def ids(self, text: str) -> list[int]:
        chars = [c.lower() if c.strip() else "[UNK]" for c in text[: self.maxlen - 2]]
        return self.tokenizer.tokens_to_ids(["[CLS]"] + chars + ["[SEP]"])

    @torch.inference_mode()
    def scores(self, ids: list[list[int]]) -> torch.Tensor:
        from bert4torch.snippets import sequence_padding

        x = torch.tensor(sequence_padding(ids), dtype=torch.long)
        mask = (x != self.tokenizer._token_pad_id).long()
        logits = self.gp(self.bert([x, torch.zeros_like(x)]), mask)
        lengths = mask.sum(1)
        logits[:, :, 0, :] = logits[:, :, :, 0] = -float("inf")  # [CLS]
        rows = torch.arange(len(ids))
        logits[rows, :, lengths - 1, :] = -float("inf")  # [SEP]
        logits.transpose(2, 3)[rows, :, lengths - 1, :] = -float("inf")
        return logits

    def predict(self, texts: list[str]) -> list[list[dict]]:
        out = []
        for start in range(0, len(texts), BATCH):
            chunk = texts[start:start + BATCH]
            logits = self.scores([self.ids(t) for t in chunk])
            found: list[set] = [set() for _ in chunk]
            for b, t, i, j in (logits > 0).nonzero().tolist():
                found[b].add((self.types[t], i - 1, j - 1))
            for text, spans in zip(chunk, found):
                out.append([{"type": k, "start": s, "end": e + 1, "text": text[s:e + 1]}
                            for k, s, e in sorted(spans, key=lambda x: (x[1], x[2], x[0]))])
        return out


def run(n: int = 600, n_train: int = 200, reps: int = 2, timing: bool = True, from_scratch: bool = False,
        quick: bool = False) -> dict:
    """The benchmark's numbers; ``timing=False``: outputs only, ``quick``: the fp32 paths only."""
    texts = ["".join(c) for c, _ in datasets.ner_peoples_daily("test")[:n]]
    with tempfile.TemporaryDirectory() as d:
        os.environ["KEXUE_CACHE"] = str(Path(d) / "cache")  # a fresh calibration: the choice on this machine now
        folder = train_folder(Path(d), n_train, from_scratch)
        with contextlib.redirect_stdout(io.StringIO()):
            if cli(["export", "onnx", str(folder)]) != 0:
                raise RuntimeError("kexue export onnx failed")
        predictors = kexue_paths(folder, quick)
        b4t = Bert4TorchNER(folder)
        calls = {name: (lambda p=p: p.predict(texts)) for name, p in predictors.items()}
        calls["bert4torch fp32"] = lambda: b4t.predict(texts)
        ref = predictors["kexue torch fp32"]
        outputs = {name: [r["entities"] if isinstance(r, dict) else r for r in f()] for name, f in calls.items()}
        # span scores where both compute them: kexue's tagger and bert4torch's on the same padded batch
        sample = texts[:BATCH]
        items = [{"ids": b4t.ids(t), "spans": set(), "tags": []} for t in sample]
        assert all(it["ids"] == [ref.tokenizer.cls_id] + _char_ids(ref, t) + [ref.tokenizer.sep_id]
                   for it, t in zip(items, sample)), "bert4torch's character ids differ from kexue's"
        from kexue.recipes.ner import collate

        batch = collate(items, ref.tagger, ref.tokenizer.pad_id)
        with torch.inference_mode():
            ours = ref.tagger(batch)
        theirs = b4t.scores([it["ids"] for it in items])
        valid = torch.isfinite(theirs) & (ours > -1e11)
        score_diff = float((ours - theirs)[valid].abs().max())
        score_scale = float(ours[valid].abs().max())
        secs = time_round_robin(calls, reps=reps, stat=min) if timing else {}
    want = outputs["kexue torch fp32"]
    rows = {}
    for name, got in outputs.items():
        rows[name] = {"identical_entities": sum(a == b for a, b in zip(got, want)) / len(want)}
        if name in predictors:
            rows[name]["why"] = str(predictors[name].path)
            rows[name]["path"] = predictors[name].path.name
        if secs:
            rows[name].update(seconds=secs[name], predictions_per_s=len(texts) / secs[name])
    return {"sentences": len(texts), "chars_mean": sum(map(len, texts)) / len(texts), "threads": torch.get_num_threads(),
            "hardware": describe(), "entities_fp32": sum(map(len, want)), "score_max_abs_diff_vs_bert4torch": score_diff,
            "score_max_abs": score_scale,
            "rows": rows}


def _char_ids(predictor, text: str) -> list[int]:
    from kexue.recipes.common import char_ids

    return char_ids(predictor.tokenizer, list(text[: predictor.maxlen - 2]))


def report(result: dict) -> None:
    print(f"hardware: {result['hardware']}\nthreads {result['threads']}; {result['sentences']} People's Daily "
          f"sentences ({result['chars_mean']:.0f} characters on average), {result['entities_fp32']} entities found "
          f"by kexue fp32; span scores kexue vs bert4torch max |Δ| {result['score_max_abs_diff_vs_bert4torch']:.1e}")
    rows = result["rows"]
    base = rows["bert4torch fp32"].get("seconds")
    print("| engine | path run | predictions/s | vs bert4torch | sentences with identical entities |")
    print("|---|---|---:|---:|---:|")
    for name, r in rows.items():
        speed = f"{r['predictions_per_s']:.0f} | {base / r['seconds']:.2f}x" if base else "- | -"
        print(f"| {name} | {r.get('path', '')} | {speed} | {100 * r['identical_entities']:.1f} % |")
    for name in ("kexue default (auto fp32)", "kexue precision=auto"):
        if name in rows:
            print(f"{name}: {rows[name]['why']}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=600)
    ap.add_argument("--train", type=int, default=200, help="People's Daily sentences to train the tagger on")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from-scratch", action="store_true", help="the recipe's small BERT instead of MiniLM")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args.sentences, args.train, args.reps, from_scratch=args.from_scratch)
    report(result)
    save_result("ner_users", result)
    return result


if __name__ == "__main__":
    main()

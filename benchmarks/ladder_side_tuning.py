"""Ladder Side-Tuning vs full fine-tuning of the same BERT: training memory and step time.

Memory is reported three ways: activation bytes saved for backward (exact, via
``torch.autograd.graph.saved_tensors_hooks``), gradient + AdamW-state bytes, and the peak RSS
of a fresh process (interpreter + model + 3 steps) running a few training steps (CPU has no allocator peak counter).

    python benchmarks/ladder_side_tuning.py
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_round_robin  # noqa: E402

from kexue.heads.ladder_side_tuning import LadderSideNetwork  # noqa: E402
from kexue.models import build_model  # noqa: E402

CFG = dict(model_type="bert", vocab_size=8000, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
           intermediate_size=1536, max_position_embeddings=256, type_vocab_size=2)
B, L = 16, 128


def build(mode: str):
    torch.manual_seed(0)
    backbone = build_model(CFG)
    if mode == "lst":
        body = LadderSideNetwork(backbone, 384, 6, side_dim=48, heads=4, every=1)
        model = nn.ModuleDict({"body": body, "head": nn.Linear(48, 2)})
        encode = lambda ids, mask: model["body"](ids, attention_mask=mask)[:, 0]
    else:
        model = nn.ModuleDict({"body": backbone, "head": nn.Linear(384, 2)})
        encode = lambda ids, mask: model["body"](ids, attention_mask=mask).hidden[:, 0]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(5, CFG["vocab_size"], (B, L))
    mask = torch.ones_like(ids)
    y = torch.randint(0, 2, (B,))

    def step():
        loss = nn.functional.cross_entropy(model["head"](encode(ids, mask)), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, step, (ids, mask, y, encode)


def saved_activation_bytes(model, batch) -> int:
    ids, mask, y, encode = batch
    seen, total = set(), [0]

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen and not isinstance(t, nn.Parameter):
            seen.add(key)
            total[0] += key[1]
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        nn.functional.cross_entropy(model["head"](encode(ids, mask)), y)
    return total[0]


def rss_child(mode: str) -> None:
    torch.set_num_threads(1)
    model, step, _ = build(mode)
    for _ in range(3):
        step()
    print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--rss":
        return rss_child(sys.argv[2])
    torch.set_num_threads(1)
    rows = {}
    steps = {}
    for mode in ("full", "lst"):
        model, step, batch = build(mode)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        out = subprocess.run([sys.executable, __file__, "--rss", mode], capture_output=True, text=True,
                             env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": ""}, check=True)
        rows[mode] = {"trainable": trainable, "act": saved_activation_bytes(model, batch),
                      "state": trainable * 4 * 3, "rss": json.loads(out.stdout.strip().splitlines()[-1])["peak_kb"]}
        steps[mode] = step
    times = time_round_robin(steps, reps=3, warmup=1)
    print(f"BERT {CFG['num_hidden_layers']}x{CFG['hidden_size']}, batch {B}x{L}, AdamW, 1 thread; LST side width 48")
    print(f"{'':<8}{'trainable':>12}{'saved acts MB':>15}{'grad+adam MB':>14}{'peak RSS MB':>14}{'s/step':>9}")
    for mode, r in rows.items():
        print(f"{mode:<8}{r['trainable']:>12,}{r['act'] / 2**20:>15.1f}{r['state'] / 2**20:>14.1f}"
              f"{r['rss'] / 1024:>14.1f}{times[mode]:>9.3f}")
    f, s = rows["full"], rows["lst"]
    print(f"ratios full/LST: saved activations {f['act'] / s['act']:.1f}x, grad+state {f['state'] / s['state']:.1f}x, "
          f"peak RSS {f['rss'] / s['rss']:.2f}x, step time {times['full'] / times['lst']:.2f}x")


if __name__ == "__main__":
    main()

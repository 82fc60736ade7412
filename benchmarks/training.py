"""Training step speed and memory: MLM forward + backward + AdamW at BERT-base shape, kexue vs HF
``BertForMaskedLM`` vs bert4torch, one process, the same initial weights and the same batch.

The batch is random token ids with 15 % of positions as targets (labels -100 elsewhere); the loss is
cross-entropy over the targets. "kexue" is kexue's pretraining loss (``kexue.pretraining.mlm_loss``:
vocabulary logits at the target positions only, as BERT's own pretraining code does); "kexue all
positions" projects every position like HF does, so both effects are visible. Prints tokens/s (batch tokens / step time), the ratio kexue / peer,
each peer's first-step loss difference from kexue's (same weights, so it must be ~0), and the peak
tensor memory of one step: PyTorch's profiler records every CPU allocation and free
(``profile_memory=True``); the running sum of their sizes over one step (per op, in start order: op
granularity), after a warm-up step that creates the AdamW state, peaks at the bytes the step needed on
top of weights and optimizer state (activations kept for backward, gradients, temporaries). CUDA reports ``torch.cuda.max_memory_allocated``.

    python benchmarks/training.py [--layers 12] [--batch 8] [--length 128] [--reps 2] [--device cuda]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import save_result, time_round_robin  # noqa: E402

from kexue.models.checkpoints import save_pretrained  # noqa: E402
from kexue.hardware import describe  # noqa: E402
from kexue.losses.language_model import masked_lm_loss  # noqa: E402
from kexue.models import build_model  # noqa: E402
from kexue.pretraining.objectives import mlm_loss  # noqa: E402


def peak_step_bytes(step, device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # each op's own allocations minus frees (children excluded), plus allocations outside any op
    deltas = [(e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
              for e in prof.events()]
    level = peak = 0
    for _, delta in sorted(deltas, key=lambda x: x[0]):
        level += delta
        peak = max(peak, level)
    return peak


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = dict(vocab_size=21128, hidden_size=768, num_hidden_layers=args.layers, num_attention_heads=12,
               intermediate_size=3072, max_position_embeddings=512, model_type="bert",
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # no dropout: equal losses
    torch.manual_seed(0)
    ours = build_model(cfg, with_mlm=True)
    from transformers import BertForMaskedLM

    models = {"kexue": ours, "kexue all positions": copy.deepcopy(ours)}
    with tempfile.TemporaryDirectory() as d:
        save_pretrained(ours, d)
        models["hf"] = BertForMaskedLM.from_pretrained(d, attn_implementation="sdpa")
        try:
            from bert4torch.models import build_transformer_model

            p = Path(d) / "b4t.json"
            p.write_text(json.dumps({**cfg, "hidden_act": "gelu", "model": "bert"}))
            b4t = build_transformer_model(config_path=str(p), checkpoint_path=None, with_mlm=True, verbose=0)
            hf_state = models["hf"].state_dict()
            state = b4t.state_dict()
            for name, hf_name in b4t.variable_mapping().items():
                if name in state and hf_name in hf_state:
                    state[name] = hf_state[hf_name]
            b4t.load_state_dict(state)
            models["bert4torch"] = b4t
        except Exception as e:
            print(f"bert4torch unavailable: {e!r}")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 21128, (args.batch, args.length), generator=g)
    targets = torch.rand(ids.shape, generator=g) < 0.15
    labels = torch.where(targets, ids, torch.full_like(ids, -100)).to(dev)
    ids, segs, mask = ids.to(dev), torch.zeros_like(ids).to(dev), torch.ones_like(ids).to(dev)

    def loss_of(name, model):
        if name == "hf":
            return model(input_ids=ids, token_type_ids=segs, attention_mask=mask, labels=labels).loss
        if name == "kexue":  # kexue's pretraining loss: vocabulary logits at the masked positions only
            return mlm_loss(model, {"input_ids": ids, "segment_ids": segs, "attention_mask": mask, "labels": labels})
        logits = model(ids, segs, mask).logits if name == "kexue all positions" else model([ids, segs])[-1]
        return masked_lm_loss(logits, labels)

    steps, losses = {}, {}
    for name, model in models.items():
        model.to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(name=name, model=model, opt=opt):
            loss = loss_of(name, model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        losses[name] = float(step())  # first step: same weights, same batch -> same loss
        steps[name] = step
    header = f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}\nhardware: {describe(dev)}"
    print(header)
    print(f"MLM step, BERT-base shape x {args.layers} layers, batch {args.batch} x {args.length}, AdamW")
    memory = {name: peak_step_bytes(step, dev) for name, step in steps.items()}
    secs = time_round_robin(steps, reps=args.reps, warmup=0, stat=min)
    tokens = args.batch * args.length
    rows = {}
    for name, s in secs.items():
        dl = f"loss diff vs kexue {abs(losses[name] - losses['kexue']):.1e}" if name != "kexue" else f"loss {losses[name]:.4f}"
        print(f"  {name:<20} {tokens / s:>8.0f} tok/s {s:8.2f} s/step  peak step memory {memory[name] / 2**20:8.0f} MiB  {dl}")
        rows[name] = {"tokens_per_s": tokens / s, "s_per_step": s, "peak_step_mib": memory[name] / 2**20,
                      "first_loss": losses[name]}
    for peer in [k for k in secs if k != "kexue"]:
        print(f"  kexue / {peer}: speed {secs[peer] / secs['kexue']:.2f}x, peak memory "
              f"{memory['kexue'] / max(memory[peer], 1):.2f}x")
    result = {"header": header, "batch": args.batch, "length": args.length, "layers": args.layers, "engines": rows}
    save_result("training", result, dev)
    return result


if __name__ == "__main__":
    main()

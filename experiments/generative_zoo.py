"""The generative zoo on the real 8×8 digits: every kexue generative model, short CPU training, sampled at
its usual number of network evaluations (NFE), scored by the digit-feature Fréchet distance.

ReFlow is the flow fine-tuned on 500 (noise, ODE(noise)) pairs. One table (experiments/results/generative_zoo.md/.json) and one figure (generative_zoo.png: one row of
10 samples per model, in table order). Training is deliberately short (``--steps`` for diffusion-family
models, ``--gan-steps`` for GANs), so the numbers compare models at equal small budgets, not at convergence.

    PYTHONPATH=. python experiments/generative_zoo.py --steps 300 --gan-steps 600
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from kexue.diffusion import methods
from kexue.data.batching import index_batches
from kexue.data.images import digits, save_grid
from kexue.diffusion.train import train
from kexue.diffusion.udm import DownsampleNoise, MaskNoise, sample_udm, udm_loss
from kexue.diffusion.unet import UNet
from kexue.generative.eae import EAE
from kexue.generative.gan_train import digit_scorer, train_gan
from kexue.generative.iresnet import InvertibleResNet
from kexue.train.loop import fit

OUT = Path(__file__).resolve().parent / "results"
# name -> (family, NFE as sampled)
DIFFUSION = {"ddpm": ("eps", 100), "ddim": ("eps", 20), "flow-euler": ("flow", 20), "flow-heun": ("flow", 20),
             "reflow-euler": ("reflow", 2), "shortcut": ("shortcut", 4), "pfgm": ("pfgm", 50),
             "udm-blur": ("udm", 20)}
GANS = {"gan-dcgan-original": dict(loss="original", d_norm="batch"),
        "gan-sn-hinge": dict(loss="hinge"),
        "gan-selfmod-hinge": dict(loss="hinge", selfmod=True),
        "gan-wgan-gp": dict(loss="wgan-gp", d_norm="none", betas=(0.0, 0.9)),
        "gan-reflow (post 20)": dict(loss="reflow", d_norm="none", betas=(0.0, 0.9)),
        "gan-sn-hinge + dynamics": dict(loss="hinge", dynamics_weight=0.01)}
OTHERS = ("udm-mask", "udm-down", "eae", "iresnet")


def _batches(x: torch.Tensor, batch_size: int):
    def batches(epoch: int):
        return [x[idx] for idx in index_batches(len(x), batch_size, min_size=batch_size)]
    return batches


def train_eae(x: torch.Tensor, steps: int) -> EAE:
    enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.SiLU(), nn.Linear(256, 16))
    dec = nn.Sequential(nn.Linear(16, 256), nn.SiLU(), nn.Linear(256, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
    model = EAE(enc, dec, latent_dim=16, entropy_weight=1.0)
    fit(model, lambda m, b: m.loss(b)[0], _batches(x, 128), optimizer=torch.optim.Adam(model.parameters(), 1e-3),
        steps=steps, progress=False)
    return model.eval()


def train_iresnet(x: torch.Tensor, steps: int) -> InvertibleResNet:
    model = InvertibleResNet(64, blocks=4, hidden=128, coeff=0.9)
    flat = x.flatten(1)

    def loss(m, b):  # dequantised NLL per dimension: pixels take 17 levels 2/16 apart
        b = b + torch.rand_like(b) * (2 / 16) - 1 / 16
        return -m.log_prob(b, terms=5).mean() / 64

    fit(model, loss, _batches(flat, 128), optimizer=torch.optim.Adam(model.parameters(), 1e-3), steps=steps,
        progress=False)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps of diffusion-family / EAE / i-ResNet")
    ap.add_argument("--gan-steps", type=int, default=600)
    ap.add_argument("--n", type=int, default=500, help="samples per model for the FD")
    ap.add_argument("--models", default="all", help="comma-separated names (default: all)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x = digits()[0]
    score = digit_scorer()
    names = [*DIFFUSION, *OTHERS, *GANS] if args.models == "all" else args.models.split(",")
    unknown = [n for n in names if n not in {**DIFFUSION, **GANS, **dict.fromkeys(OTHERS)}]
    if unknown:
        raise SystemExit(f"unknown models {unknown}")
    trained: dict[str, tuple[nn.Module, float]] = {}
    rows, grid = [], []
    shape = tuple(x.shape[1:])
    for name in names:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        if name in DIFFUSION:
            kind, nfe = DIFFUSION[name]
            if kind not in trained:
                base = trained["flow"][0] if kind == "reflow" and "flow" in trained else None
                if kind == "reflow" and base is None:
                    base = methods.fit("flow", x, args.steps, progress=False)
                    trained["flow"] = (base, time.perf_counter() - t0)
                trained[kind] = (methods.fit(kind, x, args.steps, base=base, reflow_pairs_n=500, progress=False), 0.0)
                trained[kind] = (trained[kind][0], time.perf_counter() - t0)
            model, seconds = trained[kind]
            samples = methods.generate(name, model, args.n, shape, nfe)
        elif name in ("udm-mask", "udm-down"):
            process = MaskNoise(8) if name == "udm-mask" else DownsampleNoise(8)
            model = train(UNet(1, 32), lambda m, b: udm_loss(m, b, process), x, args.steps, progress=False)
            seconds, nfe = time.perf_counter() - t0, 20
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                samples = sample_udm(model, torch.randn(args.n, *shape, generator=g), nfe, process)
        elif name == "eae":
            model = train_eae(x, args.steps * 3)
            seconds, nfe = time.perf_counter() - t0, 1
            torch.manual_seed(0)
            samples = model.sample(args.n)
        elif name == "iresnet":
            model = train_iresnet(x, args.steps)
            seconds, nfe = time.perf_counter() - t0, "1 inverse (100 fixed-point its/block)"
            torch.manual_seed(0)
            samples = model.sample(args.n).view(-1, *shape)
        else:
            kw = dict(GANS[name])
            gan, _ = train_gan(x, steps=args.gan_steps, width=32, lr_g=5e-4, lr_d=5e-4, **kw)
            seconds, nfe = time.perf_counter() - t0, 1
            samples = gan.sample(args.n, torch.Generator().manual_seed(0))
        m = score(samples.clamp(-1, 1))
        steps = args.gan_steps if name in GANS else (args.steps * 3 if name == "eae" else args.steps)
        rows.append({"model": name, "nfe": nfe, "train_steps": steps, "train_seconds": round(seconds, 1), **m})
        grid.append(samples[:10].clamp(-1, 1))
        print(f"{name}: FD {m['fd']:.1f}  H(y|x) {m['h_cond']:.3f}  ({seconds:.0f} s)", flush=True)
    lines = [f"Digits FD (lower is better; {args.n} samples vs all 1797 real digits, digit-classifier features)", "",
             "| model | NFE | training steps | training s | FD | H(y|x) | H(y) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['nfe']} | {r['train_steps']} | {r['train_seconds']} | {r['fd']:.1f} | "
              f"{r['h_cond']:.3f} | {r['h_marg']:.3f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    from kexue.io import atomic_write, write_json

    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.models == "all" else "_" + "_".join(n.split(" ")[0] for n in names)[:60]
    atomic_write(args.out / f"generative_zoo{suffix}.md", lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    write_json(args.out / f"generative_zoo{suffix}.json", {"rows": rows, "settings": vars(args) | {"out": str(args.out)}})
    save_grid(torch.cat(grid), args.out / f"generative_zoo{suffix}.png", nrow=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

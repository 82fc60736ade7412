"""Sampling speed: kexue's DDPM/DDIM loops vs the same loop driven by diffusers' schedulers (same UNet).

Both sides call the identical network the same number of times, so the ratio measures sampler overhead
(schedule arithmetic, indexing, noise).  Prints seconds per full sampling run and kexue/diffusers ratios.

    PYTHONPATH=. python benchmarks/diffusion.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_round_robin  # noqa: E402

from kexue.diffusion.ddim import sample_ddim
from kexue.diffusion.ddpm import sample_ddpm
from kexue.diffusion.methods import EpsNet
from kexue.diffusion.schedules import spaced_timesteps
from kexue.diffusion.unet import UNet


@torch.no_grad()
def diffusers_loop(scheduler, model, x, steps, **step_kw):
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        eps = model(x, t.expand(x.shape[0]))
        x = scheduler.step(eps, t, x, **step_kw).prev_sample
    return x


def compare(ours, theirs) -> tuple[float, float, float]:
    """Best-of-3 seconds of each sampler (interleaved) and the max |difference| of their outputs; the
    run that produces the outputs doubles as the warm-up."""
    diff = (ours() - theirs()).abs().max().item()
    t = time_round_robin({"ours": ours, "theirs": theirs}, reps=3, warmup=0, stat=min)
    return t["ours"], t["theirs"], diff


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = EpsNet(UNet(1, 32)).eval()
    for p in model.parameters():  # non-trivial weights so outputs are comparable
        torch.nn.init.normal_(p, std=0.02)
    x = torch.randn(64, 1, 8, 8)
    print(f"{'sampler':<22}{'kexue s':>10}{'diffusers s':>13}{'ratio':>8}{'max|diff|':>12}")
    for steps in (10, 50):
        ts = spaced_timesteps(1000, steps, "leading")
        ref = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
        tk, td, diff = compare(lambda: sample_ddim(model, x, model.abar, ts),
                               lambda: diffusers_loop(ref, model, x, steps, eta=0.0))
        print(f"{'ddim ' + str(steps):<22}{tk:>10.3f}{td:>13.3f}{tk / td:>8.2f}{diff:>12.2e}")
        ref = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
        tk, td, diff = compare(
            lambda: sample_ddpm(model, x, model.abar, ts, generator=torch.Generator().manual_seed(0)),
            lambda: diffusers_loop(ref, model, x, steps, generator=torch.Generator().manual_seed(0)))
        print(f"{'ddpm ' + str(steps):<22}{tk:>10.3f}{td:>13.3f}{tk / td:>8.2f}{diff:>12.2e}")
    # Pure sampler overhead: a free "network" so only the update arithmetic is timed.
    zero = lambda x, t: x * 0.1  # noqa: E731
    ts = spaced_timesteps(1000, 250, "leading")
    ref = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    tk, td, _ = compare(lambda: sample_ddim(zero, x, model.abar, ts), lambda: diffusers_loop(ref, zero, x, 250, eta=0.0))
    print(f"{'ddim 250 (no net)':<22}{tk:>10.3f}{td:>13.3f}{tk / td:>8.2f}")


if __name__ == "__main__":
    main()

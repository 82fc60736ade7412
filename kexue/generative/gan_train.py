"""Train a GAN of :mod:`kexue.generative.gan` on images through :func:`kexue.train.fit`, and score it.

One Adam optimizer with two parameter groups (generator, discriminator) takes simultaneous steps on
:class:`~kexue.generative.gan_losses.GANObjective`; :class:`~kexue.generative.gan.GeneratorEMA` keeps
the generator's weight average, which is what gets sampled. Quality: the digit-feature Fréchet
distance of :mod:`kexue.tools.image_metrics`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from kexue.data.batching import index_batches
from kexue.generative.gan import GAN, GeneratorEMA, build_gan
from kexue.generative.gan_losses import GANObjective
from kexue.train.loop import fit


def image_batches(images: torch.Tensor, batch_size: int):
    """``batches(epoch)`` for fit: a fresh permutation from the global RNG (fit seeds and restores it),
    full batches only."""
    if len(images) < batch_size:
        raise ValueError(f"batch_size {batch_size} > number of images {len(images)}")

    def batches(epoch: int):
        return [images[idx] for idx in index_batches(len(images), batch_size, min_size=batch_size)]

    return batches


def train_gan(images: torch.Tensor, *, loss: str = "hinge", selfmod: bool = False, d_norm: str = "spectral",
              steps: int = 2000, batch_size: int = 64, z_dim: int = 32, width: int = 64, lr_g: float = 2e-4,
              lr_d: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), n_critic: int = 1,
              gp_weight: float = 10.0, reflow_step: float = 1.0, dynamics_weight: float = 0.0,
              ema_decay: float | None = 0.999, seed: int = 0, checkpoint_dir: str | Path | None = None,
              progress: bool = False, **fit_options) -> tuple[GAN, dict]:
    """Returns (gan with the EMA generator weights copied in when ``ema_decay``, fit's history with
    the objective's last terms under ``history['terms']``); ``fit_options`` (``resume``, ``overwrite``,
    ``checkpoint_every`` ...) go to :func:`kexue.train.fit`."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be (N, C, S, S), got {tuple(images.shape)}")
    torch.manual_seed(seed)
    gan = build_gan(images.shape[-1], images.shape[1], z_dim, width, selfmod, d_norm)
    objective = GANObjective(loss, gp_weight, n_critic, reflow_step, dynamics_weight)
    opt = torch.optim.Adam([{"params": gan.generator.parameters(), "lr": lr_g},
                            {"params": gan.discriminator.parameters(), "lr": lr_d}], betas=betas)
    ema = GeneratorEMA(gan, ema_decay, warmup=True) if ema_decay else None
    history = fit(gan, objective, image_batches(images, batch_size), optimizer=opt, steps=steps, ema=ema,
                  progress=progress, seed=seed, checkpoint_dir=checkpoint_dir, **fit_options)
    if ema is not None:
        ema.copy_to(gan)
    history["terms"] = objective.last
    return gan, history


def digit_scorer(seed: int = 0):
    """A function ``score(samples) -> {'fd', 'h_cond', 'h_marg'}`` against all real 8×8 digits
    (classifier trained once on them)."""
    from kexue.data.images import digits
    from kexue.tools.image_metrics import sample_quality, train_classifier

    x, y = digits()
    clf = train_classifier(x, y, seed=seed)
    return lambda samples: sample_quality(clf, samples, x)

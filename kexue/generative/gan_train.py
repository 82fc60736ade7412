"""Train a GAN of :mod:`kexue.generative.gan` on images through :func:`kexue.train.fit`, and score it.

One Adam optimizer with two parameter groups (generator, discriminator) takes simultaneous steps on
:class:`~kexue.generative.gan_losses.GANObjective`; :class:`~kexue.generative.gan.GeneratorEMA` keeps
the generator's weight average, which is what gets sampled. Quality: the digit-feature Fréchet
distance of :mod:`kexue.tools.image_metrics`. :func:`save_gan` writes the trained GAN as one model folder
(kind ``gan``, :func:`kexue.io.write_folder`), :func:`load_gan` checks it and builds it back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from kexue.models.weights import LoadReport, check_fit
from kexue.data.batching import index_batches
from kexue.generative.gan import D_NORMS, GAN, GeneratorEMA, build_gan
from kexue.io import FolderError, check_folder, check_type, folder_info, read_json, safetensors_header, \
    save_safetensors, write_folder, write_json
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


MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
#: config.json of a GAN folder: what :func:`build_gan` needs, then what the folder records about its training
GAN_CONFIG = {"size": "integer", "channels": "integer", "z_dim": "integer", "width": "integer", "selfmod": "boolean",
              "d_norm": "string", "loss": "string or null", "steps": "integer or null", "data": "string or null"}


def save_gan(gan: GAN, directory: str | Path, *, loss: str | None = None, steps: int | None = None,
             data: str | None = None, files: dict[str, Callable[[Path], Any]] | None = None) -> Path:
    """Write ``model.safetensors`` (generator + discriminator; the generator's EMA weights when training kept
    them) and ``config.json`` (:data:`GAN_CONFIG`: the architecture, then ``loss``, ``steps``, ``data`` as
    recorded), plus ``files`` (name -> a function writing that path), as one model folder: complete or not
    there; other entries of ``directory`` (the run folder ``train/``) stay."""
    config = {"size": gan.generator.size, "channels": gan.generator.channels, "z_dim": gan.z_dim,
              "width": gan.discriminator.inp.out_channels, "selfmod": gan.generator.selfmod,
              "d_norm": gan.discriminator.norm, "loss": loss, "steps": steps, "data": data}
    for key, spec in GAN_CONFIG.items():
        check_type(config[key], spec, "save_gan", key)
    with write_folder(directory, folder_info("gan"), overwrite=True) as stage:
        save_safetensors(gan.state_dict(), stage / MODEL_FILE)
        write_json(stage / CONFIG_FILE, config)
        for name, write in (files or {}).items():
            write(stage / name)
    return Path(directory)


def load_gan(directory: str | Path) -> tuple[GAN, dict]:
    """The GAN :func:`save_gan` wrote (eval mode) and its config, after checking the folder (manifest sizes
    and hashes, typed config, the weights file whole); every weight must fit."""
    from safetensors.torch import load_file

    directory = Path(directory)
    manifest = check_folder(directory, required=True)
    if manifest["kind"] != "gan":
        raise FolderError(f"{directory / 'manifest.json'}: field 'kind' is {manifest['kind']!r}: not a GAN folder")
    path = directory / CONFIG_FILE
    config = check_type(read_json(path), "object", path, "(top level)")
    for key, spec in GAN_CONFIG.items():
        check_type(config.get(key), spec, path, key)
    if config["d_norm"] not in D_NORMS:
        raise FolderError(f"{path}: field 'd_norm' must be one of {', '.join(D_NORMS)}, got {config['d_norm']!r}")
    safetensors_header(directory / MODEL_FILE)
    gan = build_gan(config["size"], config["channels"], config["z_dim"], config["width"], config["selfmod"],
                    config["d_norm"])
    state = load_file(str(directory / MODEL_FILE))
    check_fit(LoadReport.compare(gan.state_dict(), state), str(directory / MODEL_FILE), f"the GAN of {path}")
    gan.load_state_dict(state)
    return gan.eval().requires_grad_(False), config

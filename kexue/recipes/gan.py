"""``kexue gan``: train a GAN on the real 8×8 digits or an image folder; PNG grid + Fréchet distance.

    kexue gan --loss hinge --selfmod --steps 1500 --out runs/gan/samples.png
    kexue gan --loss reflow --d-norm none --data path/to/images --size 16 --channels 3
"""
from __future__ import annotations

import json
import time

import torch

from kexue.recipes import args as at
from kexue.generative.gan import D_NORMS
from kexue.generative.gan_losses import LOSSES


def main(argv: list[str] | None = None) -> int:
    ap = at.ArgumentParser(prog="kexue gan", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="digits", help="'digits' (sklearn, offline) or an image folder")
    ap.add_argument("--size", type=at.positive_int, default=8, help="image side, a power of two >= 8")
    ap.add_argument("--channels", type=at.positive_int, choices=(1, 3), default=1,
                    help="1 (grayscale) or 3 (RGB), for image folders")
    ap.add_argument("--loss", choices=LOSSES, default="hinge", help="GAN objective: original, hinge, WGAN-GP or the ReFlow-derived losses")
    ap.add_argument("--selfmod", action="store_true", help="SELF-MOD: BN in G modulated by z")
    ap.add_argument("--d-norm", choices=D_NORMS, default="spectral", help="normalisation of the discriminator's layers")
    ap.add_argument("--steps", type=at.positive_int, default=1500, help="training steps (generator updates)")
    ap.add_argument("--batch-size", type=at.positive_int, default=64, help="images per step")
    ap.add_argument("--width", type=at.positive_int, default=32, help="base channel width of generator and discriminator")
    ap.add_argument("--z-dim", type=at.positive_int, default=32, help="size of the latent noise vector")
    ap.add_argument("--lr", type=at.positive_float, default=5e-4, help="both players' Adam learning rate")
    ap.add_argument("--n-critic", type=at.positive_int, default=1, help="discriminator updates per generator update")
    ap.add_argument("--dynamics-weight", type=at.nonnegative_float, default=0.0,
                    help="λ of the generator's ‖∇_φ L_D‖² penalty (GAN的第三个阶段)")
    ap.add_argument("--reflow-step", type=at.positive_float, default=1.0, help="η of the reflow generator step")
    ap.add_argument("--ema", type=at.probability, default=0.999, help="generator EMA decay (0: none)")
    ap.add_argument("--n", type=at.positive_int, default=100, help="samples in the grid")
    ap.add_argument("--seed", type=at.nonnegative_int, default=0, help="seed of initialisation, noise and batches")
    ap.add_argument("--threads", type=at.positive_int, default=1, help="torch CPU threads")
    ap.add_argument("--checkpoint-every", type=at.positive_int, default=200, help="training steps between checkpoints")
    ap.add_argument("--out", default="runs/gan", metavar="DIR",
                    help="output folder: the GAN (model.safetensors, config.json, manifest.json), samples.png, "
                         "metrics.json (digits: Fréchet distance) and train/ (fit's resumable run folder)")
    at.run_folder_args(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = at.check_output_dir(args.out)
    from kexue.data.files import require
    from kexue.data.images import digits, image_folder, save_grid
    from kexue.generative.gan_train import digit_scorer, save_gan, train_gan

    if args.data == "digits":
        if args.size != 8 or args.channels != 1:
            ap.error("--data digits is 8x8 grayscale: --size 8 --channels 1")
        x = digits()[0]
    else:
        x = image_folder(args.data, args.size, args.channels)
        require(x, args.batch_size, args.data, "image", f"one full batch of --batch-size {args.batch_size}")
    from kexue.io import fingerprint
    from kexue.recipes.common import plan_run

    # checked against out/train before any model is built: what the model's shape depends on cannot change
    # under --resume; --resume on a finished run with nothing left to train leaves --out as it is
    record = {"architecture": {"size": args.size, "channels": args.channels, "width": args.width, "z_dim": args.z_dim,
                               "selfmod": args.selfmod, "d_norm": args.d_norm},
              "data": fingerprint(x), "loss": args.loss, "batch_size": args.batch_size, "n_critic": args.n_critic,
              "reflow_step": args.reflow_step, "dynamics_weight": args.dynamics_weight}
    overwrite = plan_run(out / "train", out, {**record, "steps": args.steps}, resume=args.resume,
                         overwrite=args.overwrite, desc="kexue gan")
    if overwrite is None:
        return 0
    t0 = time.perf_counter()
    gan, history = train_gan(x, loss=args.loss, selfmod=args.selfmod, d_norm=args.d_norm, steps=args.steps,
                             batch_size=args.batch_size, z_dim=args.z_dim, width=args.width, lr_g=args.lr,
                             lr_d=args.lr, n_critic=args.n_critic, reflow_step=args.reflow_step,
                             dynamics_weight=args.dynamics_weight, ema_decay=args.ema or None, seed=args.seed,
                             checkpoint_dir=out / "train", progress=True, checkpoint_every=args.checkpoint_every,
                             resume=args.resume, overwrite=overwrite, settings=record)
    seconds = time.perf_counter() - t0
    samples = gan.sample(max(args.n, 1000 if args.data == "digits" else args.n), torch.Generator().manual_seed(args.seed))
    files = {"samples.png": lambda path: save_grid(samples[:args.n], path)}
    if args.data == "digits":
        metrics = digit_scorer()(samples)
        metrics["train_seconds"] = seconds
        print(json.dumps(metrics))
        from kexue.io import write_json

        files["metrics.json"] = lambda path: write_json(path, metrics)
    save_gan(gan, out, loss=args.loss, steps=args.steps, data=args.data, files=files)
    print(f"saved the GAN, {out / 'samples.png'} ({seconds:.0f} s training) and its metrics to {out} (one folder with "
          "its manifest.json; kexue.generative.gan_train.load_gan reads it)")
    return 0

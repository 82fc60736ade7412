"""``kexue diffusion``: train one method on digits or an image folder and save a PNG grid of samples.

    kexue diffusion --method ddim --train-steps 1000 --nfe 10 --out samples.png
    kexue diffusion --method shortcut --data path/to/images --size 16 --channels 3 --nfe 1
"""
from __future__ import annotations


import torch

from kexue.recipes import args as at
from kexue.recipes.common import plan_run
from kexue.diffusion import methods
from kexue.data.images import digits, image_folder, save_grid
from kexue.diffusion.folder import save_model


def main(argv: list[str] | None = None) -> int:
    ap = at.ArgumentParser(prog="kexue diffusion", description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=sorted(methods.SAMPLERS), default="ddim", help="the method: its model kind, loss and sampler (kexue.diffusion.methods.SAMPLERS)")
    ap.add_argument("--data", default="digits", help="'digits' (sklearn, offline) or an image folder")
    ap.add_argument("--size", type=at.positive_int, default=8, help="image side (power-of-two multiple of 4)")
    ap.add_argument("--channels", type=at.positive_int, choices=(1, 3), default=1,
                    help="1 (grayscale) or 3 (RGB), for image folders")
    ap.add_argument("--train-steps", type=at.positive_int, default=1000, help="diffusion steps T of the training schedule")
    ap.add_argument("--width", type=at.positive_int, default=32, help="base channel width of the UNet")
    ap.add_argument("--nfe", type=at.positive_int, default=10, help="network evaluations when sampling")
    ap.add_argument("--n", type=at.positive_int, default=100, help="samples drawn into samples.png")
    ap.add_argument("--seed", type=at.nonnegative_int, default=0, help="seed of initialisation and training")
    ap.add_argument("--threads", type=at.positive_int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default="runs/diffusion", metavar="DIR",
                    help="output folder: samples.png, the trained model (model.safetensors + config.json + "
                         "manifest.json, read back by kexue.diffusion.folder.load_model) and train/ (the resumable run)")
    ap.add_argument("--checkpoint-every", type=at.positive_int, default=200, help="training steps between checkpoints")
    at.run_folder_args(ap)
    args = ap.parse_args(argv)
    if args.data == "digits" and args.channels != 1:
        ap.error("--channels 3: --data digits is grayscale (--channels 1); 3 channels are for an image folder")
    torch.set_num_threads(args.threads)
    out = at.check_output_dir(args.out)
    x = digits(args.size)[0] if args.data == "digits" else image_folder(args.data, args.size, args.channels)
    kind = methods.SAMPLERS[args.method]
    # checked against out/train before any model is built: what the model's shape depends on cannot change
    # under --resume; --resume on a finished run with nothing left to train leaves --out as it is
    record = {"architecture": {"kind": kind, "width": args.width, "channels": int(x.shape[1]), "size": args.size}}
    overwrite = plan_run(out / "train", out, {**record, "steps": args.train_steps}, resume=args.resume,
                         overwrite=args.overwrite, desc="kexue diffusion")
    if overwrite is None:
        return 0
    run = dict(checkpoint_every=args.checkpoint_every, resume=args.resume, overwrite=overwrite, settings=record,
               seed=args.seed)
    torch.manual_seed(args.seed)  # the initial weights: the same run gives the same model
    base = methods.fit("flow", x, args.train_steps, args.width, checkpoint_dir=out / "train-base", **run) \
        if kind == "reflow" else None
    model = methods.fit(kind, x, args.train_steps, args.width, base=base, checkpoint_dir=out / "train", **run)
    samples = methods.generate(args.method, model, args.n, tuple(x.shape[1:]), args.nfe, progress=True)
    if samples is None:
        ap.error(f"{args.method} cannot use exactly {args.nfe} evaluations (Heun needs an even NFE)")
    save_model(model, out, kind=kind, channels=x.shape[1], width=args.width, size=args.size,
               method=args.method, train_steps=args.train_steps, data=args.data,
               files={"samples.png": lambda path: save_grid(samples, path)})
    print(f"saved the model and {out / 'samples.png'} to {out} (one folder with its manifest.json)")
    return 0

"""Image data for the diffusion models: scikit-learn's 8×8 digits (offline), any image folder, PNG grids.

Images are float tensors (N, C, H, W) in [-1, 1], the range every sampler here assumes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def digits(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 real 8×8 handwritten digits of ``sklearn.datasets.load_digits`` (shipped with sklearn).

    Returns (images (N, 1, size, size) in [-1, 1], labels (N,)); size > 8 upsamples bilinearly.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2 - 1  # pixel values are 0..16
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
    return x, torch.tensor(d.target, dtype=torch.long)


def image_folder(path: str | Path, size: int = 32, channels: int = 3) -> torch.Tensor:
    """Every image under ``path`` (recursively), resized to size×size, as (N, channels, size, size) in [-1, 1]."""
    from PIL import Image

    files = sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {path}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    mode = {1: "L", 3: "RGB"}[channels]
    arrs = [np.asarray(Image.open(f).convert(mode).resize((size, size), Image.BICUBIC), dtype=np.float32)
            for f in files]
    x = torch.from_numpy(np.stack(arrs)).reshape(len(arrs), size, size, channels).permute(0, 3, 1, 2)
    return x / 127.5 - 1


def labelled_image_folder(path: str | Path, size: int = 32, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A folder with one subfolder per class (``DIR/cat/*.png``, ``DIR/dog/*.jpg`` ...): the images of every
    class (recursively under its subfolder) as (N, channels, size, size) in [-1, 1], their labels (N,) and the
    class names (the subfolder names, sorted; label i is ``classes[i]``). Images lying directly in ``path``
    have no class and are refused, as is a class subfolder without images."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {path} does not exist")
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise ValueError(f"{path}: images directly in the folder have no class ({', '.join(loose[:3])}"
                         f"{' …' if len(loose) > 3 else ''}); put each class in its own subfolder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{path} has no class subfolders (expected {path}/<class>/<image files>)")
    xs, ys = [], []
    for i, name in enumerate(classes):
        try:
            x = image_folder(root / name, size, channels)
        except FileNotFoundError:
            raise ValueError(f"class folder {root / name} holds no images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))})") from None
        xs.append(x)
        ys.append(torch.full((len(x),), i, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys), classes


def save_grid(x: torch.Tensor, path: str | Path, nrow: int = 10, scale: int = 4) -> Path:
    """Save a batch in [-1, 1] as one PNG grid (1-pixel gaps), each pixel magnified ``scale`` times."""
    from PIL import Image

    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    n, c, h, w = x.shape
    rows = (n + nrow - 1) // nrow
    grid = torch.full((c, rows * (h + 1) + 1, nrow * (w + 1) + 1), 255, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + k * (w + 1): 1 + k * (w + 1) + w] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if c == 1 else arr)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    from kexue.io import atomic_write

    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))

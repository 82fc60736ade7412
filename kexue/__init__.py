"""kexue: the models and training techniques of Scientific Spaces (kexue.fm), in PyTorch."""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``kexue.capture(model, "layers.*.attn.probs") as got`` without importing torch at ``import kexue``
    # (the CLI stays fast); the module kexue.capture is itself callable, so both spellings work.
    if name == "capture":
        import importlib

        return importlib.import_module(".capture", __name__)
    raise AttributeError(f"module 'kexue' has no attribute {name!r}")


def load(directory, quantize: str | None = None):
    """The :class:`kexue.predict.Predictor` of a model folder written by a recipe (``predict(list) -> list[dict]``)."""
    from .predict import load as _load

    return _load(directory, quantize)

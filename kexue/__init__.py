"""kexue: the models and training techniques of Scientific Spaces (kexue.fm), in PyTorch."""
from __future__ import annotations

__version__ = "0.1.0"


def load(directory, quantize: str | None = None):
    """The :class:`kexue.predict.Predictor` of a model folder written by a recipe (``predict(list) -> list[dict]``)."""
    from .predict import load as _load

    return _load(directory, quantize)

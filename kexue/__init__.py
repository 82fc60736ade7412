"""kexue: the models and training techniques of Scientific Spaces (kexue.fm), in PyTorch.

The public face, loaded lazily so that ``import kexue`` (and the command line) stays fast::

    build_model(...)       a Transformer of any family (bert4keras's build_transformer_model)
    Tokenizer              WordPiece with bert4keras's API
    generate(model, ...)   cached greedy / beam / sampling decoding
    fit(model, loss, ...)  the one training loop (resumable run folders, torchrun / DDP)
    load(DIR)              the predictor of a saved model folder
    Task, register_task    a task of your own, served like the recipes' (kexue.recipes.custom)
    capture(model, ...)    any intermediate of a forward pass

The package is built in floors, each importing only the floors below it::

    io, hardware  <-  data, text  <-  layers, heads, losses, optim  <-  models
      <-  train, generation, tools  <-  similarity, pretraining, diffusion, generative  <-  recipes  <-  cli
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kexue import _legacy

__version__ = "0.1.0"
__all__ = ["Task", "Tokenizer", "build_model", "capture", "fit", "generate", "load", "register_task"]

_legacy.install()

if TYPE_CHECKING:  # the real objects, for type checkers and IDEs
    from kexue.generation import generate
    from kexue.models import build_model
    from kexue.recipes.custom import Task, register_task
    from kexue.recipes.predictor import Predictor
    from kexue.text.tokenizer import Tokenizer
    from kexue.tools import capture
    from kexue.train import fit


def __getattr__(name: str) -> Any:
    if name == "build_model":
        from kexue.models import build_model

        return build_model
    if name == "Tokenizer":
        from kexue.text.tokenizer import Tokenizer

        return Tokenizer
    if name == "generate":
        from kexue.generation import generate

        return generate
    if name == "fit":
        from kexue.train import fit

        return fit
    if name == "capture":  # the module kexue.tools.capture is itself callable: kexue.capture(model, "layers.*")
        from kexue.tools import capture

        return capture
    if name in ("Task", "register_task"):
        from kexue.recipes import custom

        return getattr(custom, name)
    raise AttributeError(f"module 'kexue' has no attribute {name!r}")


def load(directory: Any, quantize: str | None = None, *, backend: str = "auto", precision: str = "fp32") -> "Predictor":
    """The :class:`~kexue.recipes.predictor.Predictor` of a saved model folder (``predict(list) -> list[dict]``);
    ``backend`` / ``precision`` pick the inference path (:mod:`kexue.recipes.fastpath`; fp32 unless asked)."""
    from kexue.recipes.predictor import load as _load

    return _load(directory, quantize, backend=backend, precision=precision)

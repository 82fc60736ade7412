"""kexue: the models and training techniques of Scientific Spaces (kexue.fm), in PyTorch."""
__version__ = "0.1.0"

from .capture import capture  # noqa: E402  (kexue.capture(model, "layers.*.attn.probs") as got: ...)

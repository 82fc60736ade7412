"""kexue: the models and training techniques of Scientific Spaces (kexue.fm), in PyTorch."""
__version__ = "0.1.0"

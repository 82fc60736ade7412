"""Floor 4, the training engine: :func:`fit` (the loop, :mod:`kexue.train.loop`) and its run folder
(:mod:`kexue.train.state`: settings, atomic state files, exact resume). It knows no model family and
no technique: a loss is any ``loss_fn(model, batch)``; ``fit(..., adversarial=FGM())`` trains on a perturbed
token-embedding table (:mod:`kexue.train.adversarial`); ``fp16=True`` trains with a gradient scaler on CUDA,
``log_dir=`` writes TensorBoard event files (:mod:`kexue.train.tensorboard`)."""
from kexue.train.adversarial import FGM, PGD, VAT, GradientPenalty
from kexue.train.loop import FitState, NonFiniteError, batch_size, fit, init_distributed, resolve_bf16, shard
from kexue.train.state import SettingsMismatch, check_run, load_state, read_settings, save_state, start_run

__all__ = ["FGM", "FitState", "GradientPenalty", "NonFiniteError", "PGD", "SettingsMismatch", "VAT", "batch_size",
           "check_run", "fit", "init_distributed", "load_state", "read_settings", "resolve_bf16", "save_state", "shard",
           "start_run"]

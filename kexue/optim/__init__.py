"""Optimizers and training strategies: Lion, Tiger, Amos (+ Amos-derived strategies), weight EMA, schedules, and
the one optimizer preset of kexue's trainers (:func:`adamw_preset`)."""
from kexue.optim.amos import Amos
from kexue.optim.ema import EMA, RampedEMA
from kexue.optim.lion import Lion
from kexue.optim.param_groups import layerwise_lr_groups, lr_multipliers
from kexue.optim.preset import Preset, adamw_preset
from kexue.optim.schedules import PiecewiseLinear, WarmupCosine, WarmupLinear, lambda_lr
from kexue.optim.strategies import AmosDecay, AmosSchedule, amos_hparams, init_scale, param_groups_by_scale
from kexue.optim.tiger import Tiger, tiger_param_groups

__all__ = ["Amos", "AmosDecay", "AmosSchedule", "EMA", "Lion", "PiecewiseLinear", "Preset", "RampedEMA", "Tiger",
           "WarmupCosine", "WarmupLinear", "adamw_preset", "amos_hparams", "init_scale", "lambda_lr",
           "layerwise_lr_groups", "lr_multipliers",
           "param_groups_by_scale", "tiger_param_groups"]

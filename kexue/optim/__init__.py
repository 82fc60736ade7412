"""Optimizers and training strategies: Lion, Amos (+ Amos-derived strategies), weight EMA, schedules."""
from kexue.optim.amos import Amos
from kexue.optim.ema import EMA, RampedEMA
from kexue.optim.lion import Lion
from kexue.optim.schedules import PiecewiseLinear, WarmupCosine, WarmupLinear, lambda_lr
from kexue.optim.strategies import AmosDecay, AmosSchedule, amos_hparams, init_scale, param_groups_by_scale

__all__ = ["Amos", "AmosDecay", "AmosSchedule", "EMA", "Lion", "RampedEMA", "PiecewiseLinear", "WarmupCosine", "WarmupLinear",
           "amos_hparams", "init_scale", "lambda_lr", "param_groups_by_scale"]

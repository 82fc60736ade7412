"""Diffusion and flow models of 生成扩散模型漫谈: DDPM, DDIM, ODE/ReFlow, shortcut models, PFGM, UDM.

Samplers are small pure functions over a model (``sample_*``); ``methods`` ties each to a UNet and a loss.
"""
from kexue.diffusion.ddim import ddim_step, sample_ddim
from kexue.diffusion.ddpm import ddpm_loss, ddpm_step, sample_ddpm
from kexue.diffusion.flow import flow_loss, reflow_pairs, sample_euler, sample_heun
from kexue.diffusion.pfgm import empirical_field, pfgm_loss, sample_pfgm
from kexue.diffusion.schedules import alphas_cumprod, make_betas, spaced_timesteps
from kexue.diffusion.shortcut import sample_shortcut, shortcut_loss, shortcut_target
from kexue.diffusion.udm import BlurNoise, sample_udm, udm_loss
from kexue.diffusion.unet import UNet

__all__ = ["BlurNoise", "UNet", "alphas_cumprod", "ddim_step", "ddpm_loss", "ddpm_step", "empirical_field",
           "flow_loss", "make_betas", "pfgm_loss", "reflow_pairs", "sample_ddim", "sample_ddpm", "sample_euler",
           "sample_heun", "sample_pfgm", "sample_shortcut", "sample_udm", "shortcut_loss", "shortcut_target",
           "spaced_timesteps", "udm_loss"]

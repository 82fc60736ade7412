"""Generative models outside the diffusion family: invertible ResNet, EAE."""

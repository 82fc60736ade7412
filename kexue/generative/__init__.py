"""Generative models outside the diffusion family: GANs (DCGAN, SELF-MOD, spectral norm; original,
hinge, WGAN-GP and ReFlow-derived objectives), invertible ResNet, EAE."""

"""kexue's PFGM against direct numpy transcriptions of the reference code (github.com/Newbeeer/Poisson_flow:
``losses.py`` poisson branch, ``methods.Poisson.prior_sampling`` / ``Poisson.ode``,
``models/utils_poisson.forward_pz``)."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from kexue.diffusion.pfgm import empirical_field, perturb, prior, prior_radius, sample_pfgm


def _ref_target(perturbed, real, gamma):
    """losses.py: min-distance-ratio weights ** (N+1), normalised, field / (|field| + gamma) * sqrt(N)."""
    n = perturbed.shape[1] - 1
    dist = np.sqrt(((perturbed[:, None, :] - real[None]) ** 2).sum(-1))
    w = (dist.min(1, keepdims=True) / (dist + 1e-7)) ** (n + 1)
    coeff = w / (w.sum(1, keepdims=True) + 1e-7)
    field = (coeff[..., None] * -(perturbed[:, None, :] - real[None])).sum(1)
    return field / (np.linalg.norm(field, axis=1, keepdims=True) + gamma) * np.sqrt(n)


def test_training_target_matches_reference():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.uniform(-1, 1, (300, 16)), np.zeros((300, 1))], 1)
    pert = np.concatenate([rng.normal(0, 1.5, (20, 16)), np.abs(rng.normal(0, 2, (20, 1)))], 1)
    ours = empirical_field(torch.tensor(pert), torch.tensor(real), gamma=5.0).numpy()
    assert np.abs(ours - _ref_target(pert, real, 5.0)).max() <= 1e-6


def _ref_radius(b, z_max, upper_norm):
    return np.clip(np.sqrt(z_max ** 2 * b / (1 - b)), 1, upper_norm)


def test_prior_matches_reference_law():
    dim, z_max = 64, 40.0
    b = np.random.default_rng(0).beta(dim / 2, 0.5, 5000)  # reference: Beta(a = (dim + 1)/2 - 0.5, b = 0.5)
    assert np.abs(prior_radius(torch.tensor(b), z_max, 3000.0).numpy() - _ref_radius(b, z_max, 3000.0)).max() <= 1e-9
    torch.manual_seed(0)
    x = prior(5000, dim, z_max, upper_norm=3000.0)
    ref = _ref_radius(np.random.default_rng(1).beta((dim + 1) / 2 - 0.5, 0.5, 5000), z_max, 3000.0)
    assert scipy.stats.ks_2samp(x.norm(dim=1).numpy(), ref).pvalue > 0.01  # same radius distribution
    cos = (x[:2500] * x[2500:]).sum(1) / (x[:2500].norm(dim=1) * x[2500:].norm(dim=1))
    assert abs(cos.mean().item()) < 0.01  # uniform directions: E cos = 0


def _ref_ode_step(v, x, z, dt, gamma, z_exp):
    """methods.Poisson.ode (z-substitution below z_exp when gamma > 0) and one Euler step in log z."""
    dim = x.shape[1]
    x_drift, z_drift = v[:, :-1].copy(), v[:, -1].copy()
    if z < z_exp and gamma > 0:
        norm_1 = np.linalg.norm(x_drift, axis=1) / np.sqrt(dim)
        x_norm = gamma * norm_1 / (1 - norm_1)
        x_norm = np.sqrt(x_norm ** 2 + z ** 2)
        z_drift = -np.sqrt(dim) * np.ones_like(z_drift) * z / (x_norm + gamma)
    dx_dz = x_drift * (1 / (z_drift + 1e-5))[:, None]
    return x + dt * z * dx_dz


@pytest.mark.parametrize("z_exp,gamma", [(5.0, 5.0), (0.0, 5.0), (5.0, 0.0)])
def test_backward_ode_step_and_z_substitution_match_reference(z_exp, gamma):
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(6, 16))
    v = np.concatenate([rng.normal(size=(6, 16)) * 0.5, -np.abs(rng.normal(size=(6, 1))) - 0.1], 1)

    def field(x, z):  # a fixed predicted field: E_x small enough that |E_x|/sqrt(N) < 1
        return torch.tensor(v)

    z_max, z_min = 3.0, 1.0  # one step from z = 3 (below z_exp = 5: substituted) to 1
    out = sample_pfgm(field, torch.tensor(x0), steps=1, z_max=z_max, z_min=z_min, z_exp=z_exp, gamma=gamma)
    ref = _ref_ode_step(v, x0, z_max, math.log(z_min) - math.log(z_max), gamma, z_exp)
    assert np.abs(out.numpy() - ref).max() <= 1e-6


def test_restricted_perturbation_redraws_m_for_near_plane_samples():
    torch.manual_seed(0)
    x = torch.zeros(4000, 8)
    m = torch.full((4000,), 280.0)
    out = perturb(x, m, sigma_end=0.01, tau=0.03, restrict_m=0.7 * 280)
    z, r = out[:, -1], out[:, :-1].norm(dim=1)
    # near-plane samples (|eps_z| < 0.005 i.e. z < 0.005 * 1.03^m) got m < 196: much smaller norms
    big = (1.03 ** 280) * 0.005
    free = z >= big
    assert free.any() and (~free).any()
    assert r[~free].median() < r[free].median() / 10
    assert torch.allclose(perturb(x[:10], m[:10], restrict_m=None)[:, -1].abs() / 1.03 ** 280 < 1, torch.tensor(True))

"""Samplers driven by closed-form models: they must reproduce the data distribution they were given."""
import math

import pytest
import torch

from kexue.diffusion.ddim import sample_ddim
from kexue.diffusion.ddpm import sample_ddpm
from kexue.diffusion.flow import sample_euler, sample_heun
from kexue.diffusion.pfgm import empirical_field, prior, sample_pfgm
from kexue.diffusion.schedules import alphas_cumprod, make_betas, spaced_timesteps
from kexue.diffusion.shortcut import sample_shortcut, shortcut_target

MU = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
A = torch.tensor([[0.6, 0.0, 0.0], [0.3, 0.4, 0.0], [-0.2, 0.1, 0.3]], dtype=torch.float64)
SIGMA = A @ A.T


def gaussian_eps_model(abar):
    """E[ε | x_t] for x_0 ~ N(μ, Σ): sqrt(1-ᾱ) (ᾱΣ + (1-ᾱ)I)^{-1} (x_t - sqrt(ᾱ) μ)."""
    def model(x, t):
        a = abar[t[0]].double()
        cov = a * SIGMA + (1 - a) * torch.eye(3, dtype=torch.float64)
        return (torch.linalg.solve(cov, (x - a.sqrt() * MU).T).T * (1 - a).sqrt())
    return model


def gaussian_velocity(x, t):
    """E[x_1 - x_0 | x_t] for x_t = (1-t) x_0 + t x_1, x_0 ~ N(0, I), x_1 ~ N(μ, Σ)."""
    t = float(t[0])
    cov = (1 - t) ** 2 * torch.eye(3, dtype=torch.float64) + t ** 2 * SIGMA
    cross = t * SIGMA - (1 - t) * torch.eye(3, dtype=torch.float64)
    return MU + (cross @ torch.linalg.solve(cov, (x - t * MU).T)).T


def assert_moments(x, tol_mean=0.03, tol_cov=0.03):
    assert torch.allclose(x.mean(0), MU, atol=tol_mean), x.mean(0)
    assert torch.allclose(torch.cov(x.T), SIGMA, atol=tol_cov), torch.cov(x.T)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_50_steps_recovers_gaussian(schedule):
    abar = alphas_cumprod(make_betas(schedule, 1000)).double()
    x = torch.randn(10000, 3, dtype=torch.float64)
    out = sample_ddim(gaussian_eps_model(abar), x, abar, spaced_timesteps(1000, 50, "trailing"))
    # 50 deterministic steps leave a small discretisation bias (cov error ≈ 0.02-0.03 of a 0.36 variance).
    assert_moments(out, tol_cov=0.045)


def test_ddim_stochastic_and_ddpm_recover_gaussian():
    # Stochastic samplers need more steps than η = 0 for the same accuracy (the post's point about DDIM).
    abar = alphas_cumprod(make_betas("cosine", 1000)).double()
    x = torch.randn(10000, 3, dtype=torch.float64)
    assert_moments(sample_ddim(gaussian_eps_model(abar), x, abar, spaced_timesteps(1000, 200, "trailing"), eta=1.0))
    assert_moments(sample_ddpm(gaussian_eps_model(abar), x, abar, spaced_timesteps(1000, 200, "trailing")))


def test_flow_ode_recovers_gaussian():
    x = torch.randn(10000, 3, dtype=torch.float64)
    assert_moments(sample_heun(gaussian_velocity, x, 25))
    assert_moments(sample_euler(gaussian_velocity, x, 50), tol_cov=0.05)


def test_shortcut_target_is_two_half_steps():
    torch.manual_seed(0)
    W, U, c = torch.randn(4, 4), torch.randn(4), torch.randn(4)

    def linear(x, t, d):  # s = x W + t U + d c, linear in all inputs
        return x @ W + t[:, None] * U + d[:, None] * c

    x, t, d = torch.randn(5, 4), torch.rand(5) / 2, torch.full((5,), 0.125)
    s1 = x @ W + t[:, None] * U + d[:, None] * c
    x_half = x + 0.125 * s1
    s2 = x_half @ W + (t + 0.125)[:, None] * U + d[:, None] * c
    x_full = x_half + 0.125 * s2
    target = shortcut_target(linear, x, t, d)
    torch.testing.assert_close(target, (s1 + s2) / 2)
    # One step of size 2d along the target lands exactly where the two half steps land.
    torch.testing.assert_close(x + 0.25 * target, x_full)


def test_shortcut_sampler_exact_for_constant_velocity():
    x = torch.randn(6, 2)
    out = sample_shortcut(lambda x, t, d: torch.ones_like(x) * 3.0, x, steps=1)
    torch.testing.assert_close(out, x + 3.0)


def test_pfgm_field_points_from_noise_to_data():
    data = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # two charges on the z = 0 plane (N = 2)
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(500, 3, generator=g) * 4
    pts[:, -1] = pts[:, -1].abs() + 0.1
    f = empirical_field(pts, data)
    # Towards the data: decreasing z, and positive projection on the way to the nearest charge.
    assert (f[:, -1] < 0).all()
    nearest = data[(pts[:, None, :2] - data[None, :, :2]).norm(dim=-1).argmin(1)]
    assert ((f * (nearest - pts)).sum(1) > 0).float().mean() > 0.95
    # Far away the field is radial, pointing at the centre of charge (the origin).
    far = torch.tensor([[30.0, 40.0, 50.0]])
    cos = torch.nn.functional.cosine_similarity(empirical_field(far, data), -far)
    assert cos.item() > 0.999
    # Norm of the normalised field is sqrt(N) (γ = 0).
    torch.testing.assert_close(f.norm(dim=1), torch.full((500,), math.sqrt(2)))


def test_pfgm_sampler_lands_on_mixture_modes():
    torch.manual_seed(0)
    modes = torch.tensor([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
    data = modes[torch.randint(0, 4, (400,))] + 0.1 * torch.randn(400, 2)
    ref = torch.cat([data, torch.zeros(400, 1)], 1)

    def field(x, z):
        return empirical_field(torch.cat([x, z[:, None]], 1), ref)

    x = prior(600, 2, z_max=40.0)
    out = sample_pfgm(field, x, steps=120, z_max=40.0, z_min=1e-3, z_exp=0.0)  # exact field: no substitution
    dist = (out[:, None] - modes[None]).norm(dim=-1)
    assert (dist.min(1).values < 0.5).float().mean() > 0.95
    counts = torch.bincount(dist.argmin(1), minlength=4)
    assert (counts > 90).all(), counts


def test_flow_loss_is_the_velocity_regression():
    """kexue.losses.flow_matching (re-exported by kexue.diffusion.flow): the loss with its own draws equals
    mean ((v(x_t, t) - (x_1 - x_0))²) computed in float64 from the same draws."""
    from kexue.losses.flow_matching import flow_interpolate, flow_loss as fm_loss
    from kexue.diffusion.flow import flow_loss
    assert flow_loss is fm_loss

    def model(x, t):
        return 0.3 * x + t.view(-1, 1, 1, 1)

    x1 = torch.randn(5, 1, 4, 4)
    torch.manual_seed(3)
    got = flow_loss(model, x1)
    torch.manual_seed(3)
    x0, t = torch.randn_like(x1).double(), torch.rand(5).double()
    a, z, tt = x1.double().numpy(), x0.numpy(), t.numpy()[:, None, None, None]
    xt = (1 - tt) * z + tt * a
    want = ((0.3 * xt + tt - (a - z)) ** 2).mean()
    assert abs(got.item() - want) < 1e-6
    # per-token noise levels ([B, N] against [B, N, P] values) broadcast over the last axis
    x0, x1, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.rand(2, 3)
    torch.testing.assert_close(flow_interpolate(x0, x1, t), (1 - t[..., None]) * x0 + t[..., None] * x1)

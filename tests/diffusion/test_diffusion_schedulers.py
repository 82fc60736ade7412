"""kexue DDPM/DDIM schedules and single steps against diffusers' DDPMScheduler / DDIMScheduler."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from kexue.diffusion.ddim import ddim_step
from kexue.diffusion.ddpm import ddpm_step
from kexue.diffusion.schedules import alphas_cumprod, make_betas, spaced_timesteps

DIFFUSERS_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_betas_and_alphas_cumprod(schedule):
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_SCHEDULE[schedule])
    betas = make_betas(schedule, 1000)
    torch.testing.assert_close(betas, ref.betas, atol=1e-7, rtol=0)
    torch.testing.assert_close(alphas_cumprod(betas), ref.alphas_cumprod, atol=1e-7, rtol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 50, 1000])
def test_timesteps(spacing, n):
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    ref.set_timesteps(n)
    assert spaced_timesteps(1000, n, spacing).tolist() == ref.timesteps.tolist()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("n", [1000, 10])
def test_ddpm_steps_match(schedule, n):
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_SCHEDULE[schedule],
                                  clip_sample=False)
    ref.set_timesteps(n)
    abar = alphas_cumprod(make_betas(schedule, 1000))
    ts = ref.timesteps.tolist()
    for i in [0, 1, len(ts) // 2, len(ts) - 1]:
        t, prev_t = ts[i], ts[i + 1] if i + 1 < len(ts) else -1
        x, eps = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
        want = ref.step(eps, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(i))
        got = ddpm_step(eps, t, prev_t, x, abar, noise)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("n", [4, 50])
def test_ddim_steps_match(schedule, eta, n):
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_SCHEDULE[schedule],
                                  clip_sample=False)
    ref.set_timesteps(n)
    abar = alphas_cumprod(make_betas(schedule, 1000))
    ts = spaced_timesteps(1000, n).tolist()
    assert ts == ref.timesteps.tolist()
    for i in range(len(ts)):
        t, prev_t = ts[i], ts[i + 1] if i + 1 < len(ts) else -1
        x, eps, noise = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
        want = ref.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
        torch.testing.assert_close(ddim_step(eps, t, prev_t, x, abar, eta, noise), want, atol=1e-6, rtol=0)


def test_ddpm_arbitrary_subsequence_matches():
    """Any descending sub-sequence (here non-uniform) gives diffusers' custom-timestep DDPM chain."""
    ts = [999, 811, 500, 260, 75, 9, 0]
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    ref.set_timesteps(timesteps=ts)
    abar = alphas_cumprod(make_betas("cosine", 1000))
    x = torch.randn(2, 1, 4, 4)
    want, got = x.clone(), x.clone()
    eps_of = lambda x, t: torch.tanh(x) * (t / 1000)  # noqa: E731  a fixed non-trivial "model"
    gw, gg = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for i, t in enumerate(ts):
        want = ref.step(eps_of(want, t), t, want, generator=gw).prev_sample
        noise = torch.randn(x.shape, generator=gg) if t > 0 else None
        got = ddpm_step(eps_of(got, t), t, ts[i + 1] if i + 1 < len(ts) else -1, got, abar, noise)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)

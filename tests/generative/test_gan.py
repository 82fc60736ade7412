"""GAN building blocks against independent oracles: torch's spectral_norm and matrix 2-norm, direct
per-sample autograd for the gradient penalties, AveragedModel for the generator EMA, the Dirac-GAN
closed form for the dynamics regulariser, plain BatchNorm for SELF-MOD at initialisation."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from kexue.generative.gan import GAN, Discriminator, Generator, GeneratorEMA, build_gan
from kexue.generative.gan_losses import GANObjective, d_loss, g_loss, gradient_penalty, interpolate, reflow_generator_loss
from kexue.generative.selfmod import SelfModBatchNorm
from kexue.generative.spectral_norm import sn_sigma, spectral_norm


@pytest.mark.parametrize("make", [lambda: nn.Linear(12, 7), lambda: nn.Conv2d(3, 5, 4, stride=2, padding=1)])
def test_spectral_norm_matches_torch_and_bounds_sigma(make):
    torch.manual_seed(0)
    ours, ref = make().double(), make().double()
    ref.load_state_dict(ours.state_dict())
    spectral_norm(ours, coefficient=0.7)
    torch.nn.utils.parametrizations.spectral_norm(ref)
    p = sn_sigma(ours)
    tp = ref.parametrizations.weight[0]
    p.u.copy_(tp._u)
    p.v.copy_(tp._v)
    for _ in range(3):  # same power iteration (u then v, from the same start) and the same sigma
        assert (ours.weight - 0.7 * ref.weight).abs().max().item() <= 1e-10
    # after enough iterations the top singular value is the coefficient (never above it)
    p.power_iteration(ours.parametrizations.weight.original.detach().flatten(1), 200)
    ours.eval()
    sigma = torch.linalg.matrix_norm(ours.weight.detach().flatten(1), ord=2).item()
    assert sigma <= 0.7 * (1 + 1e-8)
    assert sigma == pytest.approx(0.7, rel=1e-6)
    w0 = ours.weight.detach().clone()
    assert torch.equal(ours.weight.detach(), w0)  # eval mode: u, v frozen, deterministic


def test_spectral_norm_bad_input():
    with pytest.raises(ValueError, match="coefficient"):
        spectral_norm(nn.Linear(3, 3), coefficient=0.0)
    with pytest.raises(ValueError, match="ConvTranspose"):
        spectral_norm(nn.ConvTranspose2d(3, 3, 4))
    with pytest.raises(ValueError, match="bias"):
        spectral_norm(nn.Linear(3, 3), name="bias")


def _per_sample_grads(disc, x):
    rows = []
    for xi in x:
        xi = xi.detach().unsqueeze(0).requires_grad_(True)
        g, = torch.autograd.grad(disc(xi).sum(), xi)
        rows.append(g.flatten())
    return torch.stack(rows)


def test_gradient_penalties_equal_direct_autograd():
    torch.manual_seed(0)
    disc = Discriminator(8, 1, 8, norm="none").double()
    real, fake = torch.randn(6, 1, 8, 8).double(), torch.randn(6, 1, 8, 8).double()
    t = torch.rand(6).double()
    x_hat = interpolate(real, fake, t)
    assert torch.allclose(x_hat, t.view(-1, 1, 1, 1) * real + (1 - t.view(-1, 1, 1, 1)) * fake)
    norms = _per_sample_grads(disc, x_hat).norm(dim=1)
    assert gradient_penalty(disc, x_hat, 1.0).item() == pytest.approx(((norms - 1) ** 2).mean().item(), rel=1e-10)
    assert gradient_penalty(disc, x_hat, 0.0).item() == pytest.approx((norms ** 2).mean().item(), rel=1e-10)
    # the penalty is differentiable in D's parameters (it trains D)
    gp = gradient_penalty(disc, x_hat)
    assert all(g is not None for g in torch.autograd.grad(gp, list(disc.parameters()), allow_unused=True)[:2])


def test_reflow_identity_and_generator_gradient():
    """The step the post-20 derivation rests on: ∫_0^1 <∇D(x_t), x1 - x0> dt = D(x1) - D(x0), checked by
    Gauss-Legendre quadrature; and the sample-moving generator loss has the gradient -η ∇_θ E D(G(z))."""
    torch.manual_seed(0)
    smooth = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0)).double()
    x0, x1 = torch.randn(4, 1, 8, 8).double(), torch.randn(4, 1, 8, 8).double()
    nodes, weights = np.polynomial.legendre.leggauss(40)
    integral = torch.zeros(4, dtype=torch.float64)
    for s, w in zip((nodes + 1) / 2, weights / 2):
        xt = interpolate(x1, x0, torch.full((4,), float(s), dtype=torch.float64))
        integral += w * (_per_sample_grads(smooth, xt) * (x1 - x0).flatten(1)).sum(1)
    assert torch.allclose(integral, (smooth(x1) - smooth(x0)).detach(), atol=1e-8)

    disc = Discriminator(8, 1, 8, norm="none").double()

    gen = Generator(4, 8, 1, 8).double()
    z = torch.randn(5, 4).double()
    gen.train()
    loss = reflow_generator_loss(disc, gen(z), step=0.3)
    ours = torch.autograd.grad(loss, list(gen.parameters()))
    ref = torch.autograd.grad(-0.3 * disc(gen(z)).mean(), list(gen.parameters()))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("loss", ["original", "hinge", "wgan-gp", "reflow"])
def test_objective_splits_gradients_between_players(loss):
    """The single scalar given to fit trains D with ∇L_D only and G with ∇L_G only."""
    torch.manual_seed(0)
    gan = build_gan(8, 1, z_dim=4, width=8, d_norm="none").double()
    real = torch.randn(6, 1, 8, 8).double()
    obj = GANObjective(loss)
    torch.manual_seed(1)
    obj(gan, real).backward()
    got = {k: p.grad.clone() for k, p in gan.named_parameters()}
    # reference: the two losses built separately with the same z (and the same interpolation t)
    gan.zero_grad()
    torch.manual_seed(1)
    z = torch.randn(6, 4, dtype=torch.float64)
    fake = gan.generator(z)
    ld = d_loss(loss, gan.discriminator(real), gan.discriminator(fake.detach()))
    if loss in ("wgan-gp", "reflow"):
        pen = gradient_penalty(gan.discriminator, interpolate(real, fake.detach()), 1.0 if loss == "wgan-gp" else 0.0)
        ld = ld + (10.0 if loss == "wgan-gp" else 0.5) * pen
    d_grads = torch.autograd.grad(ld, list(gan.discriminator.parameters()))
    lg = reflow_generator_loss(gan.discriminator, fake, 1.0) if loss == "reflow" else g_loss(loss, gan.discriminator(fake))
    g_grads = torch.autograd.grad(lg, list(gan.generator.parameters()))
    for (k, _), g in zip(gan.discriminator.named_parameters(), d_grads):
        assert torch.allclose(got["discriminator." + k], g, atol=1e-10), k
    for (k, _), g in zip(gan.generator.named_parameters(), g_grads):
        assert torch.allclose(got["generator." + k], g, atol=1e-10), k


def test_n_critic_skips_generator_and_bad_options():
    gan = build_gan(8, 1, z_dim=4, width=8, d_norm="none")
    obj = GANObjective("wgan-gp", n_critic=3)
    for i in range(4):
        gan.zero_grad(set_to_none=True)
        obj(gan, torch.randn(4, 1, 8, 8)).backward()
        assert (gan.generator.project.weight.grad is not None) == (i % 3 == 0)
    assert int(gan.step) == 4
    with pytest.raises(ValueError, match="d_norm"):
        GANObjective("wgan-gp")(build_gan(8, 1, 4, 8, d_norm="batch"), torch.randn(4, 1, 8, 8))
    with pytest.raises(ValueError, match="unknown GAN loss"):
        GANObjective("lsgan")
    with pytest.raises(ValueError, match="gp_weight"):
        GANObjective("hinge", gp_weight=5.0)
    with pytest.raises(ValueError, match="power of two"):
        Generator(8, 12)
    with pytest.raises(ValueError, match="norm"):
        Discriminator(8, 1, 8, norm="layer")
    with pytest.raises(ValueError, match="shape"):
        Generator(8, 8)(torch.randn(2, 5))


class _Dirac(nn.Module):
    """Dirac GAN (data at 0, generator = a point θ, D(x) = ψ x) in the GAN container's shape."""

    def __init__(self, psi, theta):
        super().__init__()
        self.discriminator = nn.Linear(1, 1, bias=False).double()
        self.discriminator.weight.data.fill_(psi)
        self.generator = _Point(theta)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))


class _Point(nn.Module):
    z_dim = 1

    def __init__(self, theta):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([theta], dtype=torch.float64))

    def forward(self, z):
        return self.theta.expand(len(z), 1)


def _field(psi, theta, weight):
    """-(∂/∂ψ, ∂/∂θ) of GANObjective's scalar: the simultaneous gradient flow of (ψ, θ)."""
    m = _Dirac(psi, theta)
    GANObjective("original", dynamics_weight=weight)(m, torch.zeros(1, 1, dtype=torch.float64)).backward()
    return -np.array([m.discriminator.weight.grad.item(), m.generator.theta.grad.item()])


@pytest.mark.parametrize("weight", [0.0, 0.8])
def test_dynamics_regulariser_makes_dirac_gan_equilibrium_stable(weight):
    """'GAN的第三个阶段': at the equilibrium (0, 0) the plain flow's Jacobian [[0, -1/2], [1/2, 0]] has
    eigenvalues ±i/2 (pure rotation); λ‖∇_ψ L_D‖² in G's loss gives [[0, -1/2], [1/2, -λ/2]], real part -λ/4."""
    h = 1e-5
    jac = np.stack([(_field(h, 0, weight) - _field(-h, 0, weight)) / (2 * h),
                    (_field(0, h, weight) - _field(0, -h, weight)) / (2 * h)], axis=1)
    assert np.allclose(jac, [[0, -0.5], [0.5, -weight / 2]], atol=1e-6)
    eig = np.linalg.eigvals(jac)
    assert np.allclose(eig.real, -weight / 4, atol=1e-6)
    # and the discrete simultaneous steps from (1, 1): the plain flow only creeps in through the
    # nonlinear terms (|p| 1.41 -> 0.59 in 300 steps), the regularised one converges (-> 0.002)
    p = np.array([1.0, 1.0])
    for _ in range(300):
        p = p + 0.1 * _field(*p, weight)
    assert (np.linalg.norm(p) > 0.3) if weight == 0 else (np.linalg.norm(p) < 0.01)


@pytest.mark.parametrize("warmup", [False, True])
def test_generator_ema_equals_averaged_model(warmup):
    torch.manual_seed(0)
    gan = build_gan(8, 1, z_dim=4, width=8)
    ema = GeneratorEMA(gan, decay=0.9, buffers=False, warmup=warmup)
    if warmup:
        ref = AveragedModel(gan.generator, avg_fn=lambda avg, p, n: avg + (1 - min(0.9, n / (9 + n))) * (p - avg))
    else:
        ref = AveragedModel(gan.generator, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    ref.update_parameters(gan.generator)  # AveragedModel's first call copies (EMA copies at construction)
    opt = torch.optim.SGD(gan.parameters(), lr=0.1)
    for _ in range(6):
        opt.zero_grad()
        GANObjective("hinge")(gan, torch.randn(4, 1, 8, 8)).backward()
        opt.step()
        ema.update(gan)
        ref.update_parameters(gan.generator)
    assert set(ema.shadow) == {k for k, _ in gan.generator.named_parameters()}  # D is not averaged
    for (k, _), q in zip(gan.generator.named_parameters(), ref.module.parameters()):
        assert torch.allclose(ema.shadow[k], q, atol=1e-7), k


def test_selfmod_is_batchnorm_at_init_and_modulates_per_sample():
    torch.manual_seed(0)
    layer = SelfModBatchNorm(5, 3, hidden=4)
    h, z = torch.randn(6, 5, 2, 2), torch.randn(6, 3)
    plain = F.batch_norm(h, None, None, training=True, eps=1e-5)
    assert torch.allclose(layer(h, z), plain, atol=1e-6)
    for mlp in (layer.gamma, layer.beta):
        nn.init.normal_(mlp[-1].weight)
    gamma = 1 + mlp_out(layer.gamma, z)
    beta = mlp_out(layer.beta, z)
    assert torch.allclose(layer(h, z), gamma[:, :, None, None] * plain + beta[:, :, None, None], atol=1e-5)


def mlp_out(mlp, z):
    w1, b1, w2, b2 = mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias
    return torch.relu(z @ w1.T + b1) @ w2.T + b2


def test_generator_shapes_sizes_and_selfmod():
    for size in (8, 16):
        for sm in (False, True):
            gan = build_gan(size, 3, z_dim=6, width=8, selfmod=sm)
            x = gan.sample(5, torch.Generator().manual_seed(0))
            assert x.shape == (5, 3, size, size) and x.abs().max() <= 1
            assert gan.discriminator(x).shape == (5,)
    assert isinstance(build_gan(selfmod=True).generator.norms[0], SelfModBatchNorm)


def test_train_gan_through_fit_on_real_digits(tmp_path):
    from kexue.data.images import digits
    from kexue.generative.gan_train import train_gan

    x = digits()[0][:128]
    gan, history = train_gan(x, loss="wgan-gp", d_norm="none", steps=4, batch_size=32, width=8, z_dim=4,
                             n_critic=2, checkpoint_dir=tmp_path)
    assert history["step"] == [1, 2, 3, 4] and "gp" in history["terms"]
    assert (tmp_path / "model.safetensors").exists()
    assert int(gan.step) == 4
    with pytest.raises(ValueError, match="batch_size"):
        train_gan(x[:10], steps=1, batch_size=32)


def test_cli_refuses_bad_options():
    from kexue.recipes.gan import main

    from kexue.recipes.args import UsageError

    with pytest.raises(UsageError, match="--size 8"):
        main(["--data", "digits", "--size", "16"])
    with pytest.raises(UsageError, match="--loss"):
        main(["--loss", "lsgan"])
    with pytest.raises(UsageError, match="--ema"):
        main(["--ema", "1.5"])


def test_cli_writes_a_folder(tmp_path):
    from kexue.cli import main as cli

    out = tmp_path / "gan"
    assert cli(["gan", "--steps", "2", "--batch-size", "16", "--width", "8", "--z-dim", "8", "--n", "4",
                "--out", str(out)]) == 0
    assert {"samples.png", "metrics.json", "train"} <= {p.name for p in out.iterdir()}
    from kexue.generative.gan_train import load_gan
    from kexue.io import check_folder

    manifest = check_folder(out, required=True)  # one unit: the GAN, its samples and metrics; train/ kept beside
    assert manifest["kind"] == "gan" and manifest["other"] == ["train"]
    assert set(manifest["files"]) == {"model.safetensors", "config.json", "samples.png", "metrics.json"}
    gan, config = load_gan(out)
    assert config["width"] == 8 and config["z_dim"] == 8 and gan.sample(3).shape == (3, 1, 8, 8)
    changed = ["gan", "--steps", "2", "--batch-size", "16", "--width", "16", "--z-dim", "8", "--n", "4", "--out", str(out)]
    assert cli(changed) == 2  # the run folder's recorded settings differ: refused by name
    assert cli(changed + ["--overwrite"]) == 0
    assert load_gan(out)[1]["width"] == 16 and check_folder(out)["other"] == ["train"]

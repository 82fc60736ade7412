"""Ledger entries, part B: the diffusion series and the other generative models (GANs, EAE, i-ResNet, JoSE,
hubness). Numbers come from experiments/results/diffusion_steps.json (every sampler × NFE on the 8×8 digits),
generative_zoo.json (every model at its usual NFE, short equal training), jose_zh.json and hubness.json; the
quality measure is the Fréchet distance in a digit classifier's features (lower is better)."""
from __future__ import annotations

from ledger_sources import J, Post, Rx, Where

STEPS = "experiments/results/diffusion_steps.json"
ZOO = "experiments/results/generative_zoo.json"
JOSE, HUB = "experiments/results/jose_zh.json", "experiments/results/hubness.json"
STEPS_CMD = lambda n: f"`PYTHONPATH=. python experiments/diffusion_steps.py --steps {n.steps} --n {n.n}`"  # noqa: E731
ZOO_CMD = lambda n: (f"`PYTHONPATH=. python experiments/generative_zoo.py --steps {n.zoo_steps} "  # noqa: E731
                     f"--gan-steps {n.gan_steps} --n {n.zoo_n}`")


def fd(method: str, nfe: int) -> J:
    """Fréchet distance of ``method`` sampled with ``nfe`` network evaluations (diffusion_steps.json)."""
    return J(STEPS, "results", method, str(nfe), "fd")


def zoo(model: str) -> J:
    return J(ZOO, "rows", Where("model", model), "fd")


STEPS_ARGS = {"steps": J(STEPS, "meta", "steps"), "n": J(STEPS, "meta", "n"),
              "real": J(STEPS, "meta", "real_baseline", "fd")}
ZOO_ARGS = {"zoo_steps": J(ZOO, "settings", "steps"), "gan_steps": J(ZOO, "settings", "gan_steps"),
            "zoo_n": J(ZOO, "settings", "n")}


def pfgm_judge(n):
    steps_better, zoo_better = n.pf50 < n.dd50, n.zpf <= n.zdd
    if steps_better and zoo_better:
        return "yes", "PFGM is ahead of DDPM in both runs"
    if steps_better or zoo_better:
        return "partly", (f"PFGM at 50 NFE matches DDPM at 100 in the zoo ({n.zpf:.1f} vs {n.zdd:.1f}) but trails "
                          f"it at every NFE in the longer run ({n.pf50:.1f} vs {n.dd50:.1f} at 50)")
    return "no", f"PFGM trails DDPM in both runs ({n.pf50:.1f} vs {n.dd50:.1f} at 50 NFE)"


def jose_judge(n):
    doc = sum(r["jose_doc"] > r["bow"] for r in n.rows)
    word = sum(r["jose_word_avg"] > r["bow"] for r in n.rows)
    status = "yes" if doc >= len(n.rows) - 1 else "partly" if doc + word >= len(n.rows) // 2 else "no"
    return status, (f"JoSE paragraph vectors beat a bag of words on {doc}/{len(n.rows)} sets, JoSE mean word "
                    f"vectors on {word}/{len(n.rows)}")


POSTS = [
    # ------------------------------------------------------------------------------------------ diffusion
    Post(
        anchor="ddpm", archive=9119, title="生成扩散模型漫谈（一）：DDPM = 拆楼 + 建楼",
        modules=["kexue/diffusion/ddpm.py::sample_ddpm", "kexue/diffusion/schedules.py"],
        tests=[("tests/diffusion/test_diffusion_schedulers.py::test_ddpm_steps_match", "diffusers (DDPMScheduler)"),
               ("tests/diffusion/test_diffusion_samplers.py::test_ddim_stochastic_and_ddpm_recover_gaussian",
                "closed form (Gaussian data, exact ε)")],
        published="No FID: T = 1000 and α_t = √(1 − 0.02t/T), so ᾱ_T ≈ e⁻⁵; generation runs all T steps, which is "
                  "DDPM's main drawback.",
        numbers={**STEPS_ARGS, "f1": fd("ddpm", 1), "f10": fd("ddpm", 10), "f50": fd("ddpm", 50),
                 "f250": fd("ddpm", 250)},
        shown=lambda n: (f"8×8 digits, FD (real data {n.real:.1f}): DDPM sampled with 1 / 10 / 50 / 250 steps "
                         f"{n.f1:.1f} / {n.f10:.1f} / {n.f50:.1f} / {n.f250:.1f}"),
        command=STEPS_CMD,
        claim="denoising step by step generates the data, but it needs many steps",
        judge=lambda n: (("yes", f"quality comes with the steps: {n.f1:.0f} at 1, {n.f10:.1f} at 10, {n.f50:.1f} at 50")
                         if n.f50 < n.f1 / 5 and n.f10 > 1.5 * n.f50 else
                         ("no", "few steps sample as well as many")),
        docs=["docs/diffusion.md"],
    ),
    Post(
        anchor="ddim", archive=9181, title="生成扩散模型漫谈（四）：DDIM = 高观点DDPM",
        modules=["kexue/diffusion/ddim.py::sample_ddim"],
        tests=[("tests/diffusion/test_diffusion_schedulers.py::test_ddim_steps_match", "diffusers (DDIMScheduler)"),
               ("tests/diffusion/test_diffusion_samplers.py::test_ddim_50_steps_recovers_gaussian",
                "closed form (Gaussian data)")],
        published="No numbers (the DDIM paper's figure: the less noise, the better the accelerated samples); the "
                  "author's runs: fewer steps give smoother, less diverse images.",
        numbers={**STEPS_ARGS, "d10": fd("ddim", 10), "p10": fd("ddpm", 10), "p250": fd("ddpm", 250)},
        shown=lambda n: (f"the same trained model: DDIM (σ = 0) with 10 steps {n.d10:.1f}, DDPM with 10 steps "
                         f"{n.p10:.1f} and with 250 steps {n.p250:.1f}"),
        command=STEPS_CMD,
        claim="a DDPM-trained model sampled deterministically on a sub-sequence keeps its quality with far fewer steps",
        judge=lambda n: (("yes", f"DDIM at 10 steps ({n.d10:.1f}) ≈ DDPM at 250 ({n.p250:.1f}), well ahead of DDPM "
                                 f"at 10 ({n.p10:.1f})")
                         if n.d10 < n.p10 and n.d10 <= 1.2 * n.p250 else
                         ("partly", "DDIM beats DDPM at 10 steps but not DDPM at 250")
                         if n.d10 < n.p10 else ("no", "DDIM is not ahead of DDPM at 10 steps")),
        docs=["docs/diffusion.md"],
    ),
    Post(
        anchor="diffusion-ode", archive=9280, title="生成扩散模型漫谈（十二）：“硬刚”扩散ODE",
        modules=["kexue/losses/flow_matching.py::sample_euler", "kexue/losses/flow_matching.py::sample_heun",
                 "kexue/diffusion/flow.py::reflow_pairs"],
        tests=[("tests/diffusion/test_diffusion_samplers.py::test_flow_ode_recovers_gaussian",
                "closed form (exact velocity field of Gaussian data)")],
        published="A derivation, no numbers: an ODE dx/dt = f_t(x) whose density follows from the Jacobian, "
                  "linked to the heat equation.",
        numbers={**STEPS_ARGS, "e10": fd("flow-euler", 10), "h10": fd("flow-heun", 10), "p10": fd("ddpm", 10)},
        shown=lambda n: (f"ODE sampling (kexue's ODE model is rectified-flow velocity matching) with 10 evaluations: "
                         f"Euler {n.e10:.1f}, Heun {n.h10:.1f}, vs stochastic DDPM with 10 steps {n.p10:.1f}"),
        command=STEPS_CMD,
        claim="a deterministic ODE generator samples well in few steps",
        judge=lambda n: (("yes", f"the ODE at 10 evaluations ({n.e10:.1f}) is ahead of DDPM at 10 ({n.p10:.1f})")
                         if n.e10 < n.p10 else ("no", "the ODE is not ahead of DDPM at 10 steps")),
        docs=["docs/diffusion.md"],
    ),
    Post(
        anchor="udm", archive=9271, title="生成扩散模型漫谈（十一）：统一扩散模型（应用篇）",
        modules=["kexue/diffusion/udm.py::BlurNoise", "kexue/diffusion/udm.py::MaskNoise",
                 "kexue/diffusion/udm.py::DownsampleNoise"],
        tests=[("tests/diffusion/test_udm_corruptions.py::test_sampler_is_exact_with_oracle_x0",
                "closed form (exact x₀)"),
               ("tests/diffusion/test_diffusion_models.py::test_dct_matches_scipy_and_blur_properties", "scipy (DCT)"),
               ("tests/diffusion/test_udm_corruptions.py::test_downsample_levels_equal_pool_then_upsample",
                "torch avg_pool2d + nearest upsampling")],
        published="No numbers: the framework instantiated for blurring, masking, downsampling and discrete data; "
                  "samples shown as images.",
        numbers={**STEPS_ARGS, **ZOO_ARGS, "b50": fd("udm-blur", 50), "p50": fd("ddpm", 50), "blur": zoo("udm-blur"),
                 "mask": zoo("udm-mask"), "down": zoo("udm-down"), "zdd": zoo("ddpm")},
        shown=lambda n: (f"blur + noise with 50 steps {n.b50:.1f} vs DDPM {n.p50:.1f}; zoo ({n.zoo_steps} training "
                         f"steps, 20 sampling steps): masking {n.mask:.1f}, downsampling {n.down:.1f}, "
                         f"blur {n.blur:.1f}, vs DDPM {n.zdd:.1f} at 100"),
        command=lambda n: f"{STEPS_CMD(n)}; {ZOO_CMD(n)}",
        claim="one framework generates from non-Gaussian corruptions (blur, masking, downsampling)",
        judge=lambda n: (lambda worst: ("yes", f"every corruption generates within {worst:.2f}× DDPM's FD")
                         if worst <= 1.5 else ("partly", f"the worst corruption is {worst:.2f}× DDPM's FD"))(
            max(n.b50 / n.p50, n.blur / n.zdd, n.mask / n.zdd, n.down / n.zdd)),
        docs=["docs/diffusion.md"],
    ),
    Post(
        anchor="pfgm", archive=9305, title="生成扩散模型漫谈（十三）：从万有引力到扩散模型",
        modules=["kexue/diffusion/pfgm.py::sample_pfgm", "kexue/diffusion/pfgm.py::pfgm_loss"],
        tests=[("tests/diffusion/test_pfgm_reference.py::test_training_target_matches_reference",
                "numpy transcription of the reference code (Newbeeer/Poisson_flow)"),
               ("tests/diffusion/test_pfgm_reference.py::test_backward_ode_step_and_z_substitution_match_reference",
                "numpy transcription of the reference code")],
        published="No numbers in the post; it relays the paper's: better metrics, faster generation and more "
                  "robustness to hyper-parameters than diffusion models.",
        numbers={**STEPS_ARGS, **ZOO_ARGS, "pf50": fd("pfgm", 50), "pf250": fd("pfgm", 250), "dd50": fd("ddpm", 50),
                 "zpf": zoo("pfgm"), "zdd": zoo("ddpm")},
        shown=lambda n: (f"{n.steps} training steps: PFGM with 50 / 250 evaluations {n.pf50:.1f} / {n.pf250:.1f} vs "
                         f"DDPM {n.dd50:.1f} at 50; zoo ({n.zoo_steps} steps): PFGM {n.zpf:.1f} at 50 vs DDPM "
                         f"{n.zdd:.1f} at 100"),
        command=lambda n: f"{STEPS_CMD(n)}; {ZOO_CMD(n)}",
        claim="the Poisson-field ODE samples better and faster than diffusion models",
        judge=pfgm_judge,
        docs=["docs/diffusion.md"],
    ),
    Post(
        anchor="shortcut", archive=10617, title="生成扩散模型漫谈（二十七）：将步长作为条件输入",
        modules=["kexue/diffusion/shortcut.py::shortcut_loss", "kexue/diffusion/shortcut.py::sample_shortcut"],
        tests=[("tests/diffusion/test_diffusion_samplers.py::test_shortcut_target_is_two_half_steps",
                "closed form (one 2d step = two d steps)"),
               ("tests/diffusion/test_diffusion_samplers.py::test_shortcut_sampler_exact_for_constant_velocity",
                "closed form (constant velocity)")],
        published="Step sizes 2⁻⁷ … 1 (8 values), self-consistency trained on the first 7; one-step generation "
                  "from a single training stage (the paper's FID table shown as an image).",
        numbers={**STEPS_ARGS, "s1": fd("shortcut", 1), "s4": fd("shortcut", 4), "f1": fd("flow-euler", 1),
                 "r1": fd("reflow-euler", 1), "s50": fd("shortcut", 50)},
        shown=lambda n: (f"1 step: shortcut {n.s1:.1f} vs the plain flow {n.f1:.1f} (ReFlow, a second training "
                         f"stage: {n.r1:.1f}); shortcut with 4 / 50 steps {n.s4:.1f} / {n.s50:.1f}"),
        command=STEPS_CMD,
        claim="conditioning on the step size makes one-step sampling work without distillation",
        judge=lambda n: (("yes", f"one step gives {n.s1:.1f} where the same flow without the condition gives "
                                 f"{n.f1:.0f}") if n.s1 < n.f1 / 5 else ("no", "one step is not much better")),
        docs=["docs/diffusion.md"],
    ),
    # ----------------------------------------------------------------------------------- other generative
    Post(
        anchor="reflow-wgan-gp", archive=9668, title="生成扩散模型漫谈（二十）：从ReFlow到WGAN-GP",
        modules=["kexue/generative/gan_losses.py::GANObjective"],
        tests=[("tests/generative/test_gan.py::test_reflow_identity_and_generator_gradient",
                "closed form (Gauss–Legendre quadrature of ∫⟨∇D(x_t), x₁ − x₀⟩dt)"),
               ("tests/generative/test_gan.py::test_gradient_penalties_equal_direct_autograd",
                "direct per-sample autograd")],
        published="A derivation, no numbers: ReFlow with the velocity restricted to ∇D gives a WGAN-GP-like "
                  "discriminator loss with a zero-centred gradient penalty.",
        numbers={**ZOO_ARGS, "reflow": zoo("gan-reflow (post 20)"), "wgan": zoo("gan-wgan-gp"),
                 "dcgan": zoo("gan-dcgan-original")},
        shown=lambda n: (f"digits GANs, {n.gan_steps} steps: ReFlow-derived loss {n.reflow:.1f}, WGAN-GP {n.wgan:.1f}, "
                         f"original DCGAN loss {n.dcgan:.1f}"),
        command=ZOO_CMD,
        claim="the ReFlow-derived loss trains a GAN like WGAN-GP does",
        judge=lambda n: (("yes", f"it trains at least as well as WGAN-GP ({n.reflow:.1f} vs {n.wgan:.1f})")
                         if n.reflow <= n.wgan else
                         ("partly", f"it trains, behind WGAN-GP ({n.reflow:.1f} vs {n.wgan:.1f})")),
        docs=["docs/generative.md"],
    ),
    Post(
        anchor="gan-architectures", archive=6549, title="从DCGAN到SELF-MOD：GAN的模型架构发展一览",
        modules=["kexue/generative/gan.py::Generator", "kexue/generative/spectral_norm.py",
                 "kexue/generative/selfmod.py::SelfModBatchNorm"],
        tests=[("tests/generative/test_gan.py::test_spectral_norm_matches_torch_and_bounds_sigma",
                "torch spectral_norm and the matrix 2-norm"),
               ("tests/generative/test_gan.py::test_selfmod_is_batchnorm_at_init_and_modulates_per_sample",
                "plain BatchNorm at initialisation")],
        published="DCGAN over 50 % faster than ResNet at similar quality (128–256 px faces, LSUN); SELF-MOD in O-GAN: "
                  "convergence nearly 50 % faster, better FID.",
        numbers={**ZOO_ARGS, "sn": zoo("gan-sn-hinge"), "selfmod": zoo("gan-selfmod-hinge"),
                 "dcgan": zoo("gan-dcgan-original")},
        shown=lambda n: (f"digits, {n.gan_steps} steps, one seed: SN-hinge GAN {n.sn:.1f}, the same with SELF-MOD "
                         f"{n.selfmod:.1f}; plain DCGAN {n.dcgan:.1f}"),
        command=ZOO_CMD,
        claim="SELF-MOD (BN modulated by z) improves a DCGAN-style generator",
        judge=lambda n: (("yes", f"SELF-MOD lowers FD {n.sn:.1f} → {n.selfmod:.1f}") if n.selfmod < n.sn else
                         ("no", f"SELF-MOD {n.selfmod:.1f} vs {n.sn:.1f} without, at {n.gan_steps} steps and one "
                                "seed")),
        docs=["docs/generative.md"],
    ),
    Post(
        anchor="gan-dynamics", archive=6583, title="从动力学角度看优化算法（四）：GAN的第三个阶段",
        modules=["kexue/generative/gan_losses.py::GANObjective", "kexue/generative/gan.py::GeneratorEMA"],
        tests=[("tests/generative/test_gan.py::test_dynamics_regulariser_makes_dirac_gan_equilibrium_stable",
                "closed form (Dirac-GAN Jacobian eigenvalues)"),
               ("tests/generative/test_gan.py::test_generator_ema_equals_averaged_model", "torch AveragedModel")],
        published="Dirac GAN: most GANs only oscillate around the equilibrium, the zero-centred gradient penalty "
                  "converges locally; weight EMA is the strongest fix (ResNet20 on CIFAR-10, Adam lr 1e-3: 90 %+ "
                  "with EMA 0.9999 vs ≈ 86 % without).",
        numbers={**ZOO_ARGS, "sn": zoo("gan-sn-hinge"), "dyn": zoo("gan-sn-hinge + dynamics")},
        shown=lambda n: (f"digits, {n.gan_steps} steps: SN-hinge GAN {n.sn:.1f}, with the damping term "
                         f"λ‖∇_φ L_D‖² in G's loss {n.dyn:.1f}"),
        command=ZOO_CMD,
        claim="damping the oscillation around the equilibrium improves GAN training",
        judge=lambda n: (("partly", f"a damping term lowers FD {n.sn:.1f} → {n.dyn:.1f}, but it is Nagarajan & "
                                    "Kolter's generator-side penalty; the post's own remedies (L2 on D's weights, "
                                    "weight EMA on / off) are not compared")
                         if n.dyn < n.sn else ("no", f"the damping term does not help ({n.dyn:.1f} vs {n.sn:.1f})")),
        docs=["docs/generative.md"],
    ),
    Post(
        anchor="eae", archive=7343, title="EAE：自编码器 + BN + 最大熵 = 生成模型",
        modules=["kexue/generative/eae.py"],
        tests=[("tests/generative/test_generative.py::test_knn_entropy_matches_gaussian_closed_form",
                "closed form (Gaussian entropy)"),
               ("tests/generative/test_generative.py::test_eae_latents_are_normalised_and_entropy_pushes_apart",
                "direct check (BN latents, entropy gradient)")],
        published="No numbers: 'the generated images feel about the same as a VAE's, the metrics slightly better'.",
        numbers={**ZOO_ARGS, "eae": zoo("eae"), "eae_steps": J(ZOO, "rows", Where("model", "eae"), "train_steps"),
                 "ddpm": zoo("ddpm")},
        shown=lambda n: f"digits FD {n.eae:.1f} after {n.eae_steps} steps (DDPM in the same zoo: {n.ddpm:.1f})",
        command=ZOO_CMD,
        claim="an autoencoder with BN latents and maximal latent entropy generates about as well as a VAE",
        judge=("not measured", "kexue has no VAE to compare with"),
        docs=["docs/generative.md"],
    ),
    Post(
        anchor="invertible-resnet", archive=6482, title="细水长flow之可逆ResNet：极致的暴力美学",
        modules=["kexue/generative/iresnet.py"],
        tests=[("tests/generative/test_generative.py::test_inverse_and_exact_logdet",
                "closed form (exact log-determinant of the Jacobian)"),
               ("tests/generative/test_generative.py::test_lipschitz_constant_below_one", "direct check (Lip(g) < 1)")],
        published="Lip(g) from 0.5 to 0.9 in the paper; no numbers of the post's own (the paper's classification, "
                  "density and toy-data results shown as images: better than Glow).",
        numbers={**ZOO_ARGS, "fd": zoo("iresnet"), "ddpm": zoo("ddpm")},
        shown=lambda n: f"digits FD {n.fd:.1f} after {n.zoo_steps} steps (DDPM in the same zoo: {n.ddpm:.1f})",
        command=ZOO_CMD,
        claim="an invertible ResNet is a strong flow-based generative model (better than Glow)",
        judge=("not measured", "kexue has no Glow or other flow model to compare with"),
        docs=["docs/generative.md"],
    ),
    Post(
        anchor="jose", archive=7063, title="JoSE：球面上的词向量和句向量",
        modules=["kexue/similarity/jose.py"],
        tests=[("tests/similarity/test_jose.py::test_sphere_sgd_finds_the_closed_form_maximiser",
                "closed form (the maximiser on the sphere is a/‖a‖)"),
               ("tests/similarity/test_jose.py::test_hinge_objective_by_hand", "the hinge objective by hand")],
        published="No numbers in the post: 'quite competitive' on word similarity and document clustering (the "
                  "paper's tables shown as images).",
        numbers={"rows": J(JOSE, "rows"), "epochs": J(JOSE, "settings", "epochs"),
                 "window": J(JOSE, "settings", "window"),
                 "lr": J(JOSE, "settings", "lr"), "batch": J(JOSE, "settings", "batch_size"),
                 "passages": J(JOSE, "settings", "passages")},
        shown=lambda n: ("Spearman on sts-b-zh test: JoSE paragraph vectors {:.3f}, JoSE mean word vectors {:.3f}, bag "
                         "of words {:.3f}".format(n.rows[0]["jose_doc"], n.rows[0]["jose_word_avg"], n.rows[0]["bow"])),
        command=lambda n: (f"`PYTHONPATH=. python experiments/jose_zh.py --epochs {n.epochs} --window {n.window} "
                           f"--lr {n.lr} --batch-size {n.batch} --passages {n.passages}`"),
        claim="JoSE's spherical vectors are competitive word and sentence vectors",
        judge=jose_judge,
        docs=["docs/generative.md"],
    ),
    Post(
        anchor="hubness", archive=9147, title="“维度灾难”之Hubness现象浅析",
        modules=["kexue/similarity/hubness.py"],
        tests=[("tests/similarity/test_hubness.py::test_skewness_equals_scipy_and_grows_with_dimension",
                "scipy (stats.skew)"),
               ("tests/similarity/test_hubness.py::test_k_occurrence_equals_brute_force", "brute-force count")],
        published="No numbers: hubness grows with the dimension; the cited paper keeps GAN latents whose hub value "
                  "is ≥ t (t = 50 in its code) and gets better samples.",
        numbers={"s2": J(HUB, "gaussian", "2"), "s128": J(HUB, "gaussian", "128"), "s384": J(HUB, "gaussian", "384"),
                 "rand": J(HUB, "gan_fd", Where("latents", "random z ~ N(0, I)"), "fd"),
                 "h10": J(HUB, "gan_fd", Where("latents", "hubness prior N5 > 10"), "fd"),
                 "h50": J(HUB, "gan_fd", Where("latents", "hubness prior N5 > 50"), "fd"),
                 "gan_steps": Rx("experiments/results/hubness.md", r"SN discriminator, (\d+) steps")},
        shown=lambda n: (f"skewness of N₁₀ for N(0, I_d): {n.s2:.2f} at d = 2, {n.s128:.2f} at 128, "
                         f"{n.s384:.2f} at 384; digits GAN FD with random z {n.rand:.1f}, hub value > 10 "
                         f"{n.h10:.1f}, > 50 {n.h50:.1f}"),
        command=lambda n: f"`PYTHONPATH=. python experiments/hubness.py --gan-steps {n.gan_steps}`",
        claim="hubness grows with the dimension, and high-hub latents give better GAN samples",
        judge=lambda n: (("yes", "both hold") if n.s128 > n.s2 and n.h10 < n.rand else
                         ("partly", f"hubness grows with the dimension ({n.s2:.2f} → {n.s128:.2f}), but the hubness "
                                    f"prior does not improve the digits GAN ({n.h10:.1f} vs {n.rand:.1f})")
                         if n.s128 > n.s2 else ("no", "hubness does not grow with the dimension")),
        docs=["docs/generative.md"],
    ),
]

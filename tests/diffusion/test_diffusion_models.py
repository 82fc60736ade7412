"""UNet, data, UDM blur, metric and the method registry (small, CPU-fast)."""
import numpy as np
import pytest
import torch
from scipy.fft import dctn

from kexue.diffusion import methods
from kexue.data.images import digits, image_folder, labelled_image_folder, save_grid
from kexue.tools.image_metrics import frechet_distance, sample_quality, DigitClassifier
from kexue.diffusion.pfgm import PoissonFieldNet
from kexue.diffusion.udm import BlurNoise, blur, dct_matrix, sample_udm
from kexue.diffusion.unet import UNet


def test_unet_shapes_and_conditioning():
    net = UNet(1, 16, mults=(1, 2, 2))
    x = torch.randn(3, 1, 8, 8)
    assert net(x, torch.rand(3)).shape == x.shape
    net16 = UNet(3, 16, mults=(1, 2), out_channels=4, step_cond=True)
    x = torch.randn(2, 3, 16, 16)
    for prm in net16.parameters():  # the zero-initialised output convs would hide the conditioning
        torch.nn.init.normal_(prm, std=0.1)
    a = net16(x, torch.rand(2), torch.full((2,), 0.5))
    b = net16(x, torch.rand(2), torch.full((2,), 0.25))
    assert a.shape == (2, 4, 16, 16) and not torch.allclose(a, b)  # d changes the output
    with pytest.raises(ValueError):
        net16(x, torch.rand(2))


def test_class_conditional_unet_adds_a_class_embedding():
    torch.manual_seed(0)
    plain, cond = UNet(1, 16), UNet(1, 16, num_classes=3)
    for prm in plain.parameters():  # the zero-initialised output conv would hide any difference
        torch.nn.init.normal_(prm, std=0.1)
    missing, unexpected = cond.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["class_emb.weight"] and not unexpected
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    with torch.no_grad():
        cond.class_emb.weight.zero_()
        cond.class_emb.weight[2] = 0.3
        y = torch.tensor([0, 1, 2, 0])
        out = cond(x, t, y=y)
        # a zero class row is the unconditional model exactly; a non-zero row changes the output
        torch.testing.assert_close(out[[0, 1, 3]], plain(x, t)[[0, 1, 3]], atol=1e-6, rtol=0)
        assert not torch.allclose(out[2], plain(x, t)[2], atol=1e-3)
    with pytest.raises(ValueError, match="pass the classes y"):
        cond(x, t)
    with pytest.raises(ValueError, match="no classes"):
        plain(x, t, y=y)
    with pytest.raises(ValueError, match="num_classes"):
        UNet(1, 16, num_classes=-1)


def test_pfgm_wrapper_output_layout():
    net = PoissonFieldNet(UNet(1, 16, out_channels=2))
    assert net(torch.randn(4, 1, 8, 8), torch.rand(4) + 0.01).shape == (4, 65)


def test_digits_and_grid(tmp_path):
    x, y = digits()
    assert x.shape == (1797, 1, 8, 8) and x.min() == -1 and x.max() == 1 and set(y.tolist()) == set(range(10))
    assert digits(16)[0].shape == (1797, 1, 16, 16)
    p = save_grid(x[:12], tmp_path / "g.png", nrow=5, scale=2)
    from PIL import Image
    img = Image.open(p)
    assert img.size == ((5 * 9 + 1) * 2, (3 * 9 + 1) * 2)


def test_image_folder_roundtrip(tmp_path):
    from PIL import Image
    arr = (np.random.default_rng(0).random((6, 6, 3)) * 255).astype(np.uint8)
    (tmp_path / "sub").mkdir()
    Image.fromarray(arr).save(tmp_path / "sub" / "a.png")
    x = image_folder(tmp_path, size=6, channels=3)
    assert x.shape == (1, 3, 6, 6)
    np.testing.assert_allclose(((x[0].permute(1, 2, 0) + 1) * 127.5).numpy(), arr, atol=1e-3)
    with pytest.raises(FileNotFoundError):
        image_folder(tmp_path / "sub" / "none")


def test_labelled_image_folder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    arrs = {}
    for cls, n in (("cat", 2), ("dog", 1)):
        (tmp_path / cls / "deep").mkdir(parents=True)
        for i in range(n):
            arrs[cls, i] = (rng.random((4, 4)) * 255).astype(np.uint8)
            Image.fromarray(arrs[cls, i]).save(tmp_path / cls / ("deep" if i else ".") / f"{i}.png")
    x, y, classes = labelled_image_folder(tmp_path, size=4, channels=1)
    assert classes == ["cat", "dog"] and y.tolist() == [0, 0, 1] and x.shape == (3, 1, 4, 4)
    np.testing.assert_allclose(((x[2, 0] + 1) * 127.5).numpy(), arrs["dog", 0], atol=1e-3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no images"):
        labelled_image_folder(tmp_path, size=4, channels=1)
    Image.fromarray(arrs["dog", 0]).save(tmp_path / "loose.png")
    with pytest.raises(ValueError, match="have no class"):
        labelled_image_folder(tmp_path, size=4, channels=1)
    with pytest.raises(ValueError, match="no class subfolders"):
        labelled_image_folder(tmp_path / "dog" / "deep", size=4, channels=1)
    with pytest.raises(FileNotFoundError):
        labelled_image_folder(tmp_path / "nothing")


def test_dct_matches_scipy_and_blur_properties():
    x = torch.randn(2, 1, 8, 6)
    d8, d6 = dct_matrix(8), dct_matrix(6)
    ref = dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose((d8 @ x @ d6.T).numpy(), ref, atol=1e-5)
    torch.testing.assert_close(blur(x, torch.zeros(2)), x, atol=1e-5, rtol=0)        # σ = 0: identity
    y = blur(x, torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(y.mean((-2, -1)), x.mean((-2, -1)), atol=1e-5, rtol=0)  # heat flow keeps mass
    assert y[1].var() < y[0].var() < x.var()                                          # wider = smoother


def test_udm_sampler_is_exact_with_oracle_x0():
    # If the network returns the true x_0 (single-image data), deterministic sampling ends exactly at x_0.
    process = BlurNoise(4.0)
    x0 = torch.randn(1, 1, 8, 8)
    out = sample_udm(lambda x, t: x0.expand_as(x), torch.randn(5, 1, 8, 8), 4, process)
    torch.testing.assert_close(out, x0.expand(5, -1, -1, -1), atol=1e-5, rtol=0)


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, shifted mean: FD = ||Δμ||².
    assert frechet_distance(a, a + np.array([1.0, 2.0, 0.0])) == pytest.approx(5.0, abs=1e-6)
    # N(0, I) vs N(0, 4I) in 3-D: Tr(I + 4I - 2·2I) = 3.
    assert frechet_distance(a, 2 * a) == pytest.approx(3 * np.var(a, ddof=1, axis=0).mean(), rel=0.05)


def test_sample_quality_keys():
    clf = DigitClassifier().eval()
    q = sample_quality(clf, torch.randn(50, 1, 8, 8), torch.randn(60, 1, 8, 8))
    assert set(q) == {"fd", "h_cond", "h_marg"} and 0 <= q["h_cond"] <= np.log(10) + 1e-6


@pytest.mark.parametrize("name", sorted(methods.SAMPLERS))
def test_every_method_trains_and_samples(name):
    torch.manual_seed(0)
    data = torch.rand(32, 1, 8, 8) * 2 - 1
    kind = methods.SAMPLERS[name]
    base = methods.fit("flow", data, 2, width=16, batch_size=8, progress=False) if kind == "reflow" else None
    model = methods.fit(kind, data, 3, width=16, batch_size=8, base=base, reflow_pairs_n=8, progress=False)
    out = methods.generate(name, model, 4, (1, 8, 8), nfe=2)
    assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all()

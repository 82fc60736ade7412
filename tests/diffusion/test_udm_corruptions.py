"""UDM's masking and downsampling corruptions: their degradations against direct constructions
(a pixel count, torch's avg_pool2d + nearest interpolate) and the sampler's exactness with an oracle x0."""
import pytest
import torch
from torch.nn import functional as F

from kexue.data.images import digits
from kexue.diffusion.udm import DownsampleNoise, MaskNoise, sample_udm


def test_mask_fraction_and_nesting():
    p = MaskNoise(8, seed=3)
    x = digits()[0][:4] + 2  # strictly positive so an erased pixel is visible as a 0
    for k in range(65):
        t = torch.full((4,), k / 64)
        out = p.degrade(x, t)
        assert int((out[0] == 0).sum()) == k  # exactly a fraction t of the 64 pixels erased
    m1, m2 = p.mask(torch.tensor([0.3])), p.mask(torch.tensor([0.6]))
    assert bool((m2 <= m1).all())  # nested: erased pixels stay erased
    with pytest.raises(ValueError, match="MaskNoise"):
        p.degrade(torch.zeros(1, 1, 16, 16), torch.tensor([0.5]))


def test_downsample_levels_equal_pool_then_upsample():
    p = DownsampleNoise(8)
    x = digits()[0][:5]
    for level in range(4):
        t = torch.full((5,), level / 3)
        ref = F.interpolate(F.avg_pool2d(x, 2 ** level), size=8, mode="nearest") if level else x
        assert torch.allclose(p.degrade(x, t), ref, atol=1e-6)
    t = torch.tensor([0.0, 1 / 6, 0.5, 5 / 6, 1.0])  # halfway between levels: the average of the two
    mid = p.degrade(x, t)
    half = 0.5 * (F.interpolate(F.avg_pool2d(x[1:2], 1), size=8) + F.interpolate(F.avg_pool2d(x[1:2], 2), size=8))
    assert torch.allclose(mid[1:2], half, atol=1e-6)
    assert torch.allclose(mid[4], x[4].mean().expand(1, 8, 8), atol=1e-6)
    with pytest.raises(ValueError, match="power-of-two"):
        DownsampleNoise(12)


@pytest.mark.parametrize("process", [MaskNoise(8), DownsampleNoise(8)])
def test_sampler_is_exact_with_oracle_x0(process):
    x0 = digits()[0][7:8]
    out = sample_udm(lambda x, t: x0.expand_as(x), torch.randn(3, 1, 8, 8), 5, process)
    assert torch.allclose(out, x0.expand(3, 1, 8, 8), atol=1e-5)

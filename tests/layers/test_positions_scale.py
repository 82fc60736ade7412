"""Hierarchical positions (《层次分解位置编码，让BERT可以处理超长文本》) and the entropy-invariant scale
(《从熵不变性看Attention的Scale操作》), each against the post's formula written out here."""
import math

import pytest
import torch

from kexue.layers import MultiHeadAttention, entropy_invariant_scale, hierarchical_positions


def test_hierarchical_first_rows_exact_and_every_extended_row_is_the_post_formula():
    n, alpha = 6, 0.4
    p = torch.randn(n, 5, dtype=torch.float64)
    q = hierarchical_positions(p, n * n, alpha)
    assert torch.equal(q[:n], p)
    u = {i: (p[i - 1] - alpha * p[0]) / (1 - alpha) for i in range(1, n + 1)}  # 1-indexed as in the post
    for i in range(1, n + 1):
        for j in range(1, n + 1):
            want = alpha * u[i] + (1 - alpha) * u[j]  # q_{(i-1)n+j}
            assert torch.allclose(q[(i - 1) * n + j - 1], want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="at most 36"):
        hierarchical_positions(p, 37, alpha)
    with pytest.raises(ValueError, match="hierarchical_alpha"):
        hierarchical_positions(p, 12, 0.5)


def test_entropy_scale_at_training_length_is_standard_attention_bit_for_bit():
    torch.manual_seed(0)
    for n in (64, 512):
        plain, scaled = MultiHeadAttention(32, 4).eval(), MultiHeadAttention(32, 4, entropy_train_len=n).eval()
        scaled.load_state_dict(plain.state_dict())
        x = torch.randn(2, n, 32)
        assert torch.equal(plain(x), scaled(x))
        pad = torch.ones(2, 1, 1, n + 3, dtype=torch.bool)  # n real keys among n+3 positions
        pad[..., n:] = False
        x3 = torch.randn(2, n + 3, 32)
        assert torch.equal(plain(x3, pad), scaled(x3, pad))
    assert entropy_invariant_scale(torch.tensor([512.0]), 512).item() == 1.0


def test_entropy_scale_elsewhere_is_log_n_over_log_N():
    n = torch.tensor([1.0, 2.0, 100.0, 4096.0])
    want = torch.tensor([math.log(2), math.log(2), math.log(100), math.log(4096)]) / math.log(64)
    assert torch.allclose(entropy_invariant_scale(n, 64), want, rtol=1e-7, atol=0)

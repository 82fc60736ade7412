"""Interleaved sequences: patches, RoPE-Tie positions and the attention pattern, each against the definitions of
《“闭门造车”之多模态思路浅谈（一）：无损输入》 / 《Transformer升级之路：17、多模态位置编码的简单思考》 written out
here, and the attention pattern as the model actually applies it."""
import dataclasses

import pytest
import torch

from kexue.multimodal import (ImageSpec, MultimodalTransformer, build_backbone, collate, interleave, patchify,
                              place_patches, unpatchify)

IDS = dict(pad=0, cls=2, sep=3, placeholder=4, img=5, end_img=6)


def post_positions(parts):
    """The post's positions by its own rules: text token n -> (n, n); after the text token at L, patch (i, j)
    (1-based row i of h, column j of w) -> (L + i(w+1), L + j(h+1)); the next text token -> K = L + (w+1)(h+1)."""
    out, last = [], -1
    for part in parts:
        if isinstance(part, tuple):
            h, w = part
            for i in range(1, h + 1):
                for j in range(1, w + 1):
                    out.append((last + i * (w + 1), last + j * (h + 1)))
            last = last + (w + 1) * (h + 1) - 1  # the next text token is at last + 1 = L + (w+1)(h+1)
        else:
            for _ in part:
                last += 1
                out.append((last, last))
    return out


def post_mask(parts):
    """Who sees whom: a text token sees every token up to itself; a patch sees everything before its image and
    every patch of its own image."""
    kinds = []  # per token: ("text", None) or ("patch", image index, first index of the image, last index)
    k = 0
    for part in parts:
        if isinstance(part, tuple):
            n = part[0] * part[1]
            kinds += [("patch", k, len(kinds), len(kinds) + n - 1)] * n
            k += 1
        else:
            kinds += [("text",)] * len(part)
    L = len(kinds)
    m = torch.zeros(L, L, dtype=torch.bool)
    for i, ki in enumerate(kinds):
        for j in range(L):
            if ki[0] == "text":
                m[i, j] = j <= i
            else:
                first, last = ki[2], ki[3]
                m[i, j] = j < first or first <= j <= last
    return m


PARTS = [[2, 7, 8], (2, 3), [6, 9], (3, 2), [10]]


def test_positions_follow_the_post():
    lay = interleave(PARTS, 4)
    assert lay.positions.tolist() == [list(p) for p in post_positions(PARTS)]
    pos = lay.positions
    # the image sits symmetrically: text -> first patch and last patch -> text are both (w+1, h+1)
    h, w = 2, 3
    first, last = 3, 3 + h * w - 1
    assert (pos[first] - pos[first - 1]).tolist() == [w + 1, h + 1] == (pos[last + 1] - pos[last]).tolist()
    assert lay.ids.tolist()[:9] == [2, 7, 8, 4, 4, 4, 4, 4, 4]
    assert lay.is_patch.tolist() == [x == 4 for x in lay.ids.tolist()]
    assert lay.image.tolist() == [-1] * 3 + [0] * 6 + [-1] * 2 + [1] * 6 + [-1]


def test_attention_pattern_is_the_posts():
    batch = collate([interleave(PARTS, 4), interleave([[2], (2, 2), [3, 3]], 4)], pad_id=0)
    want = post_mask(PARTS)
    assert torch.equal(batch.mask()[0, 0], want)
    short = post_mask([[2], (2, 2), [3, 3]])  # 7 tokens, then padding: pads are never attended to
    n = short.shape[0]
    assert torch.equal(batch.mask()[1, 0, :n, :n], short) and not batch.mask()[1, 0, :, n:].any()


def test_causal_images_for_discrete_codes():
    lay = interleave([[2], (2, 2), [3]], 4, image_attention="causal")
    m = collate([lay], 0).mask()[0, 0]
    assert torch.equal(m, torch.ones(6, 6, dtype=torch.bool).tril())
    with pytest.raises(ValueError, match="image_attention"):
        interleave([[2]], 4, image_attention="full")


def test_next_text_positions():
    batch = collate([interleave([[2, 5], (1, 2), [6, 7, 3]], 4)], 0)
    # [CLS] [IMG] p p [/IMG] 7 [SEP]: [CLS] predicts [IMG]; [/IMG] and 7 predict the next text; patches nothing
    assert batch.next_text()[0].tolist() == [True, False, False, False, True, True, False]


def test_patchify_is_a_lossless_reshape():
    x = torch.randn(2, 3, 4, 6)
    p = patchify(x, 2)
    assert p.shape == (2, 6, 12)
    for r in range(2):
        for c in range(3):
            torch.testing.assert_close(p[:, r * 3 + c], x[:, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(2, -1),
                                       rtol=0, atol=0)
    assert torch.equal(unpatchify(p, (2, 3), 2, 3), x)
    with pytest.raises(ValueError, match="do not split"):
        patchify(x, 4)


def test_bad_parts_are_refused():
    with pytest.raises(ValueError, match="part 1"):
        interleave([[2], (0, 3)], 4)
    with pytest.raises(ValueError, match="part 0"):
        interleave([(2, 3, 4)], 4)
    with pytest.raises(ValueError, match="part 0"):
        interleave(["abc"], 4)


def _model(seed=0):
    torch.manual_seed(seed)
    model = MultimodalTransformer(build_backbone(12, 32, 2, 4), ImageSpec(4, 2, 1), IDS).eval()
    for prm in model.parameters():  # wake up every weight (zero biases would hide nothing, but be thorough)
        torch.nn.init.normal_(prm, std=0.2)
    return model


def test_the_model_applies_the_pattern():
    """Changing a token (a text id, or a patch's values) changes exactly the outputs allowed to see it: its own
    image, every later token; nothing before it."""
    model = _model()
    parts = [[2, 7, 5], (2, 2), [6, 8], (2, 2), [9]]
    batch = collate([interleave(parts, 4)], 0)
    x = place_patches(batch, [torch.randn(2, 4, 4)])
    t = torch.rand(1, batch.ids.shape[1])
    base = model(batch, x, t).hidden
    allowed = post_mask(parts)
    for k in range(batch.ids.shape[1]):
        y, b = x.clone(), batch
        if batch.is_patch[0, k]:
            y[0, k] += 1.0
        else:
            ids = batch.ids.clone()
            ids[0, k] = 11
            b = dataclasses.replace(batch, ids=ids)
        changed = (model(b, y, t).hidden - base).abs().amax(-1)[0] > 1e-6
        assert torch.equal(changed, allowed[:, k]), k


def test_noise_level_is_an_input():
    model = _model()
    batch = collate([interleave([[2, 5], (2, 2)], 4)], 0)
    x = place_patches(batch, [torch.randn(1, 4, 4)])
    a = model(batch, x, torch.full((1, 6), 0.2)).hidden
    b = model(batch, x, torch.full((1, 6), 0.7)).hidden
    assert torch.allclose(a[0, :2], b[0, :2]) and not torch.allclose(a[0, 2:], b[0, 2:])  # text before: unchanged

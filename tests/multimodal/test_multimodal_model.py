"""The multimodal losses against direct computations, the samplers against hand-written loops, and a tiny
model that learns both directions."""
import math

import pytest
import torch

from kexue.losses.flow_matching import flow_interpolate, flow_target
from kexue.multimodal import (ImageSpec, MultimodalTransformer, batch_loss, build_backbone, caption_images, collate,
                              generate_images, interleave, multimodal_loss, noise_features, patchify, place_patches,
                              train_multimodal, training_batch, unpatchify)

IDS = dict(pad=0, cls=2, sep=3, placeholder=4, img=5, end_img=6)


def _model(seed=0, hidden=32):
    torch.manual_seed(seed)
    model = MultimodalTransformer(build_backbone(12, hidden, 2, 4), ImageSpec(4, 2, 1), IDS)
    for prm in model.parameters():
        torch.nn.init.normal_(prm, std=0.2)
    return model


def test_noise_features_formula():
    t = torch.tensor([0.0, 0.3, 1.0])
    f = noise_features(t, 8)
    for row, tv in zip(f, t.tolist()):
        want = [math.sin(1000 * tv * 10000 ** (-k / 4)) for k in range(4)] + \
               [math.cos(1000 * tv * 10000 ** (-k / 4)) for k in range(4)]
        torch.testing.assert_close(row, torch.tensor(want), atol=2e-4, rtol=0)


def test_loss_equals_a_direct_computation():
    model = _model()
    images = torch.rand(3, 1, 4, 4) * 2 - 1
    captions = [[7, 8], [9], [7, 10, 11]]
    generate = torch.tensor([True, False, True])
    batch, x1 = training_batch(model, images, captions, generate)
    x0 = torch.randn_like(x1)
    t = torch.tensor([0.25, 0.9, 0.6])
    got = multimodal_loss(model, batch, x1, generate, x0=x0, t=t, flow_weight=0.7)

    # by hand, element by element: the rows' patches, x_t, the full forward, the squared velocity error
    B, L = batch.ids.shape
    xt = torch.zeros_like(x1)
    level = torch.ones(B, L)
    for b in range(B):
        tb = t[b].item() if generate[b] else 1.0
        level[b] = tb
        for i in range(L):
            if batch.is_patch[b, i]:
                xt[b, i] = (1 - tb) * x0[b, i] + tb * x1[b, i]
    out = model(batch, xt, level)
    logits = model.backbone.mlm(out.hidden, model.backbone.embeddings.token.weight)  # every position
    sq, n_sq, nll, n_tok = 0.0, 0, 0.0, 0
    for b in range(B):
        patches = [i for i in range(L) if batch.is_patch[b, i]]
        assert len(patches) == 4 and torch.equal(x1[b, patches], patchify(images[b:b + 1], 2)[0])
        if generate[b]:
            v = model.velocity(out.hidden[b, patches])
            sq += ((v - (x1[b, patches] - x0[b, patches])) ** 2).sum()
            n_sq += v.numel()
        for i in range(L - 1):
            if batch.attention_mask[b, i + 1] and not batch.is_patch[b, i] and not batch.is_patch[b, i + 1]:
                nll += -torch.log_softmax(logits[b, i].double(), -1)[batch.ids[b, i + 1]]
                n_tok += 1
    flow, text = sq / n_sq, nll / n_tok
    torch.testing.assert_close(got["flow"], flow.float(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got["text"], text.float(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got["loss"], (text + 0.7 * flow).float(), atol=1e-6, rtol=1e-6)
    # the caption row's image went in clean: x_t = x_1 exactly at t = 1
    assert torch.equal(flow_interpolate(x0[1], x1[1], torch.ones(L)), x1[1])
    assert torch.equal(flow_target(x0, x1), x1 - x0)


def test_gradients_flow_to_every_part():
    model = _model()
    loss = batch_loss(model, torch.rand(4, 1, 4, 4), [[7], [8], [7], [9]], torch.tensor([True, False, True, False]))
    loss["loss"].backward()
    for name in ("patch_in.weight", "noise_in.0.weight", "velocity_out.weight",
                 "backbone.embeddings.token.weight", "backbone.layers.1.ffn.down.weight"):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_generate_images_is_euler_by_hand_and_batch_invariant():
    model = _model().eval()
    noise = torch.randn(2, 4, 4)
    got = generate_images(model, [[7, 8], [9]], steps=3, noise=noise)
    # by hand: x += (1/3) v(x, t) at t = 0, 1/3, 2/3, each from a full forward over [CLS] prompt [IMG] x_t
    for r, prompt in enumerate([[7, 8], [9]]):
        x = noise[r:r + 1].clone()
        for k in range(3):
            batch = collate([interleave([[2, *prompt, 5], (2, 2)], 4)], 0)
            with torch.no_grad():
                h = model(batch, place_patches(batch, x[:, None]), torch.full(batch.ids.shape, k / 3)).hidden
                x = x + (1 / 3) * model.velocity(h[batch.is_patch]).view(1, 4, 4)
        torch.testing.assert_close(got[r:r + 1], unpatchify(x, (2, 2), 2, 1).clamp(-1, 1), atol=1e-5, rtol=0)
    alone = generate_images(model, [[9]], steps=3, noise=noise[1:])
    torch.testing.assert_close(alone, got[1:], atol=1e-5, rtol=0)  # padding beside a longer prompt changes nothing
    with pytest.raises(ValueError, match="noise must have shape"):
        generate_images(model, [[9]], steps=3, noise=noise)
    with pytest.raises(ValueError, match="steps"):
        generate_images(model, [[9]], steps=0)


def test_caption_is_greedy_by_hand():
    model = _model().eval()
    images = torch.rand(2, 1, 4, 4) * 2 - 1
    got = caption_images(model, images, max_new_tokens=3, banned=[1])
    for r in range(2):
        ids = []
        for _ in range(3):
            batch = collate([model.caption_layout(ids, end=False)], 0)
            with torch.no_grad():
                x = place_patches(batch, patchify(images[r:r + 1], 2)[:, None])
                h = model(batch, x, torch.ones(batch.ids.shape)).hidden
                logits = model.backbone.mlm(h[0, -1], model.backbone.embeddings.token.weight)
            logits[[0, 1, 2, 4, 5, 6]] = float("-inf")  # pad, the banned 1, cls, placeholder, [IMG], [/IMG]
            tok = int(logits.argmax())
            if tok == 3:
                break
            ids.append(tok)
        assert got[r] == ids


def test_a_tiny_model_learns_both_directions():
    """Two 4×4 images with captions [7] and [8]: after training, each caption draws its image and each image
    gets its caption."""
    torch.manual_seed(0)
    model = MultimodalTransformer(build_backbone(12, 32, 2, 4), ImageSpec(4, 2, 1), IDS)
    a = -torch.ones(1, 4, 4)
    a[:, :, :2] = 1  # left half white
    b = -torch.ones(1, 4, 4)
    b[:, :2] = 1  # top half white
    images = torch.stack([a, b])
    ema, history = train_multimodal(model, images, [[7], [8]], batch_loss, steps=200, batch_size=16, lr=1e-2,
                                    warmup=10, ema_decay=0.9, progress=False)
    assert history["loss"][-1] < history["loss"][0] / 3
    assert caption_images(ema, images) == [[7], [8]]
    drawn = generate_images(ema, [[7], [8]] * 2, steps=10, generator=torch.Generator().manual_seed(0))
    own = (drawn - images.repeat(2, 1, 1, 1)).abs().mean((1, 2, 3))
    other = (drawn - images.flip(0).repeat(2, 1, 1, 1)).abs().mean((1, 2, 3))  # the two images differ by 1.0
    assert (own < 0.4).all() and (own < other / 2).all(), (own, other)


def test_bad_settings():
    with pytest.raises(ValueError, match="multiple of the patch"):
        ImageSpec(5, 2)
    with pytest.raises(ValueError, match="channels"):
        ImageSpec(4, 2, 2)
    with pytest.raises(ValueError, match="special token ids missing"):
        MultimodalTransformer(build_backbone(12, 32, 1, 4), ImageSpec(4, 2), {"pad": 0})
    with pytest.raises(ValueError, match="captions"):
        train_multimodal(_model(), torch.rand(2, 1, 4, 4), [[7]], batch_loss, steps=1)
    with pytest.raises(ValueError, match="generate_fraction"):
        train_multimodal(_model(), torch.rand(1, 1, 4, 4), [[7]], batch_loss, steps=1, generate_fraction=1.0)

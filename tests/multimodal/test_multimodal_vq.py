"""The VQ comparison model: k-means against scikit-learn, the codebook against brute force, the next-code loss
against a direct computation and autoregressive sampling against its definition."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kexue.multimodal import ImageSpec, build_backbone, collate, patchify, place_patches, unpatchify
from kexue.multimodal.vq import (PatchCodebook, VQMultimodal, assign, fit_codebook, generate_images_vq, kmeans,
                                 kmeans_plusplus, next_patch_places, vq_batch_loss)

IDS = dict(pad=0, cls=2, sep=3, placeholder=4, img=5, end_img=6)


def test_kmeans_equals_sklearn_lloyd():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.6, size=(80, 3)) for c in ([0, 0, 0], [3, 0, 1], [0, 4, -2], [2, 2, 2])])
    init = kmeans_plusplus(torch.tensor(x), 4, torch.Generator().manual_seed(1))
    ours = kmeans(torch.tensor(x), 4, iters=100, init=init)
    ref = KMeans(4, init=init.numpy(), n_init=1, max_iter=100, tol=0.0, algorithm="lloyd").fit(x)
    np.testing.assert_allclose(ours.numpy(), ref.cluster_centers_, atol=1e-5)
    assert assign(torch.tensor(x), ours).tolist() == ref.labels_.tolist()


def test_kmeans_plusplus_picks_data_points():
    x = torch.randn(50, 2)
    c = kmeans_plusplus(x, 5, torch.Generator().manual_seed(0))
    assert all(any(torch.equal(ci, xi) for xi in x) for ci in c)
    assert len({tuple(ci.tolist()) for ci in c}) == 5
    with pytest.raises(ValueError, match="k must be"):
        kmeans_plusplus(x, 51)


def test_codebook_is_nearest_centre():
    cb = PatchCodebook(torch.randn(7, 4))
    p = torch.randn(3, 5, 4)
    codes = cb.encode(p)
    brute = torch.stack([torch.stack([((cb.centres - v) ** 2).sum(1).argmin() for v in row]) for row in p])
    assert torch.equal(codes, brute) and torch.equal(cb.decode(codes), cb.centres[codes])
    spec = ImageSpec(4, 2)
    fitted = fit_codebook(torch.rand(6, 1, 4, 4), spec, 5)
    assert fitted.centres.shape == (5, 4)


def _model():
    torch.manual_seed(0)
    cb = PatchCodebook(torch.randn(6, 4))
    model = VQMultimodal(build_backbone(12, 32, 2, 4), ImageSpec(4, 2), IDS, cb)
    for name, prm in model.named_parameters():
        torch.nn.init.normal_(prm, std=0.2)
    return model


def test_vq_loss_equals_a_direct_computation():
    model = _model()
    images = torch.rand(3, 1, 4, 4) * 2 - 1
    captions = [[7, 8], [9], [10]]
    generate = torch.tensor([True, False, True])
    got = vq_batch_loss(model, images, captions, generate, image_weight=0.5)
    codes = model.codebook.encode(patchify(images, 2))  # [3, 4]
    layouts = [model.generation_layout(c) if g else model.caption_layout(c)
               for c, g in zip(captions, generate.tolist())]
    batch = collate(layouts, 0)
    x = place_patches(batch, codes[:, None, :, None])
    out = model(batch, x, None)
    logits = model.backbone.mlm(out.hidden, model.backbone.embeddings.token.weight)
    text, n_text, image, n_image = 0.0, 0, 0.0, 0
    for b in range(3):
        L = int(batch.attention_mask[b].sum())
        for i in range(L - 1):
            if not batch.is_patch[b, i] and not batch.is_patch[b, i + 1]:
                text += F.cross_entropy(logits[b, i][None], batch.ids[b, i + 1][None])
                n_text += 1
            if generate[b] and batch.is_patch[b, i + 1]:  # the token before each patch predicts its code
                k = int(batch.is_patch[b, :i + 1].sum())
                image += F.cross_entropy(model.code_out(out.hidden[b, i])[None], codes[b, k][None])
                n_image += 1
    assert n_image == 8
    torch.testing.assert_close(got["text"], text / n_text, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got["image"], image / n_image, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got["loss"], text / n_text + 0.5 * image / n_image, atol=1e-6, rtol=1e-6)


def test_patches_are_causal_in_the_vq_model():
    model = _model().eval()
    batch = collate([model.generation_layout([7])], 0)
    codes = torch.tensor([[1, 2, 3, 4]])
    base = model(batch, place_patches(batch, codes[:, None, :, None]), None).hidden
    changed = codes.clone()
    changed[0, 2] = 5
    out = model(batch, place_patches(batch, changed[:, None, :, None]), None).hidden
    diff = (out - base).abs().amax(-1)[0] > 1e-6
    assert diff.tolist() == [False] * 5 + [True, True]  # [CLS] 7 [IMG] p0 p1 | p2 p3
    assert next_patch_places(batch, torch.tensor([True]))[0].tolist() == [False, False, True, True, True, True, False]


def test_vq_sampling_is_autoregressive_by_definition():
    model = _model().eval()
    got = generate_images_vq(model, [[7], [8, 9]], generator=torch.Generator().manual_seed(3))
    # by hand: code k is drawn from softmax(code_out(h)) at the token before patch k, given codes < k
    g = torch.Generator().manual_seed(3)
    batch = collate([model.generation_layout([7]), model.generation_layout([8, 9])], 0)
    codes = torch.zeros(2, 4, dtype=torch.long)
    first = [3, 4]
    for k in range(4):
        with torch.no_grad():
            h = model(batch, place_patches(batch, codes[:, None, :, None]), None).hidden
        probs = torch.stack([model.code_out(h[r, first[r] - 1 + k]).softmax(-1) for r in range(2)])
        codes[:, k] = torch.multinomial(probs, 1, generator=g).squeeze(1)
    torch.testing.assert_close(got, unpatchify(model.codebook.decode(codes), (2, 2), 2, 1).clamp(-1, 1))
    with pytest.raises(ValueError, match="temperature"):
        generate_images_vq(model, [[7]], temperature=0)

"""Text and images in one Transformer, after 《“闭门造车”之多模态思路浅谈（一）：无损输入》 with the positions of
《Transformer升级之路：17、多模态位置编码的简单思考》 (RoPE-Tie).

* :mod:`~kexue.multimodal.sequence` — patches (a lossless reshape), interleaved layouts, RoPE-Tie positions
  (text (n, n), patches on their scaled grid) and the attention pattern (text causal, an image's patches see
  each other) as UniLM segment ids;
* :mod:`~kexue.multimodal.model` — :class:`MultimodalTransformer`: next-token cross entropy on text and a
  rectified-flow velocity loss on noised patches with the noise level as an input; ``generate_images`` (text ->
  image by Euler integration) and ``caption_images`` (image -> text, greedy);
* :mod:`~kexue.multimodal.vq` — the lossy route for comparison: k-means patch codes as tokens, generated
  autoregressively (:class:`VQMultimodal`);
* :mod:`~kexue.multimodal.train` — :func:`train_multimodal` on :func:`kexue.train.fit` with EMA weights.

``kexue multimodal`` (:mod:`kexue.recipes.multimodal`) trains one on digits or a class-folder of images and saves
a folder that ``kexue.load`` / ``kexue predict`` / ``kexue serve`` use: ``{"text": "数字 7"}`` -> an image,
``{"image": [[...]]}`` -> a caption.
"""
from kexue.multimodal.model import (END_IMG, IMG, ImageSpec, MultimodalTransformer, batch_loss, build_backbone,
                                    caption_images, generate_images, multimodal_loss, noise_features, text_targets,
                                    training_batch)
from kexue.multimodal.sequence import Batch, Layout, collate, interleave, patchify, place_patches, unpatchify
from kexue.multimodal.train import train_multimodal
from kexue.multimodal.vq import PatchCodebook, VQMultimodal, fit_codebook, generate_images_vq, kmeans, vq_batch_loss

__all__ = ["END_IMG", "IMG", "Batch", "ImageSpec", "Layout", "MultimodalTransformer", "PatchCodebook", "VQMultimodal",
           "batch_loss", "build_backbone", "caption_images", "collate", "fit_codebook", "generate_images",
           "generate_images_vq", "interleave", "kmeans", "multimodal_loss", "noise_features", "patchify",
           "place_patches", "text_targets", "train_multimodal", "training_batch", "unpatchify", "vq_batch_loss"]

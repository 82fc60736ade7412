"""Losses, one concept per module (CoSENT, SimBERT contrastive, multilabel categorical CE, …)."""
from kexue.losses.contrastive import interleave, simbert_contrastive_loss  # noqa: F401
from kexue.losses.cosent import cosent_cross_encoder_loss, cosent_loss, cosent_ranking_loss  # noqa: F401
from kexue.losses.sbert import SBERTClassifier, cosine_mse_loss, sbert_softmax_loss  # noqa: F401
from kexue.losses.globalpointer_kl import globalpointer_kl  # noqa: F401
from kexue.losses.multilabel import globalpointer_crossentropy, multilabel_categorical_crossentropy, sparse_multilabel_categorical_crossentropy

"""Losses, one concept per module (CoSENT, SimBERT contrastive, multilabel categorical CE, …)."""
from .contrastive import interleave, simbert_contrastive_loss  # noqa: F401
from .cosent import cosent_cross_encoder_loss, cosent_loss, cosent_ranking_loss  # noqa: F401
from .sbert import SBERTClassifier, cosine_mse_loss, sbert_softmax_loss  # noqa: F401
from .globalpointer_kl import globalpointer_kl  # noqa: F401
from .multilabel import (globalpointer_crossentropy, multilabel_categorical_crossentropy,  # noqa: F401
                         sparse_multilabel_categorical_crossentropy)

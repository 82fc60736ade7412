"""Losses, one concept per module (CoSENT, SimBERT contrastive, SimCSE / InfoNCE, language-model
cross-entropies, multilabel categorical CE, rectified-flow velocity matching, …)."""
from kexue.losses.contrastive import interleave, simbert_contrastive_loss  # noqa: F401
from kexue.losses.flow_matching import flow_interpolate, flow_loss, flow_matching_loss, flow_target  # noqa: F401
from kexue.losses.cosent import cosent_cross_encoder_loss, cosent_loss, cosent_ranking_loss  # noqa: F401
from kexue.losses.sbert import SBERTClassifier, cosine_mse_loss, sbert_softmax_loss  # noqa: F401
from kexue.losses.globalpointer_kl import globalpointer_kl  # noqa: F401
from kexue.losses.infonce import infonce_loss, simcse_loss  # noqa: F401
from kexue.losses.language_model import IGNORE, masked_lm_loss, next_token_loss, next_token_positions  # noqa: F401
from kexue.losses.multilabel import globalpointer_crossentropy, multilabel_categorical_crossentropy, sparse_multilabel_categorical_crossentropy
from kexue.losses.rdrop import rdrop_combine, rdrop_loss, symmetric_kl  # noqa: F401

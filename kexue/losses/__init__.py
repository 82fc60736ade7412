"""Losses, one concept per module (CoSENT, SimBERT contrastive, multilabel categorical CE, …)."""
from .globalpointer_kl import globalpointer_kl  # noqa: F401
from .multilabel import (globalpointer_crossentropy, multilabel_categorical_crossentropy,  # noqa: F401
                         sparse_multilabel_categorical_crossentropy)

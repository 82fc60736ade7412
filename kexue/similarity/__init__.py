"""Sentence similarity and retrieval: BERT-whitening, vector search, CUR cross-encoder search,
SimBERT / RoFormer-Sim, contrastive training (InfoNCE, SimCSE) with mined hard negatives, and Spearman
evaluation on the STS sets."""
from kexue.similarity.cur import CUR, cur_search, random_anchors, recall_at_k  # noqa: F401
from kexue.similarity.evaluate import evaluate_pairs, evaluate_sts, spearman  # noqa: F401
from kexue.data.inputs import check_pairs, check_texts  # noqa: F401
from kexue.similarity.search import FaissIndex, TorchIndex, build_index  # noqa: F401
from kexue.similarity.whitening import Whitening  # noqa: F401
from kexue.similarity.contrastive_training import train_contrastive_encoder  # noqa: F401
from kexue.similarity.mining import Mined, mine_hard_negatives  # noqa: F401

"""Sentence similarity and retrieval: BERT-whitening, vector search, CUR cross-encoder search,
SimBERT / RoFormer-Sim, and Spearman evaluation on the STS sets."""
from kexue.similarity.cur import CUR, cur_search, random_anchors, recall_at_k  # noqa: F401
from kexue.similarity.evaluate import evaluate_pairs, evaluate_sts, spearman  # noqa: F401
from kexue.data.inputs import check_pairs, check_texts  # noqa: F401
from kexue.similarity.search import FaissIndex, TorchIndex, build_index  # noqa: F401
from kexue.similarity.whitening import Whitening  # noqa: F401

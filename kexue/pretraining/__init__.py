"""Floor 5, pretraining (bert4keras ``pretraining/``, 《Keras：Tensorflow的黄金标准》): MLM with whole-word
masking and UniLM objectives (:mod:`~kexue.pretraining.objectives`), and kexue-zh-mini, a Chinese model
pretrained with them (:mod:`~kexue.pretraining.zh_mini`)."""
from kexue.pretraining.objectives import (UniLMPairs, WholeWordMLM, build_char_vocab, mlm_loss, read_corpus,
                                          split_source_target, unilm_loss)

__all__ = ["UniLMPairs", "WholeWordMLM", "build_char_vocab", "mlm_loss", "read_corpus", "split_source_target",
           "unilm_loss"]

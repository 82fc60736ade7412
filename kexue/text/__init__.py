"""Floor 1, text: tokenizers (:mod:`kexue.text.tokenizer`: WordPiece with bert4keras's API, jieba
word + char pre-tokenisation) and vocabulary building."""
from kexue.text.tokenizer import Tokenizer, build_vocab, jieba_words, load_vocab, pad_batch

__all__ = ["Tokenizer", "build_vocab", "jieba_words", "load_vocab", "pad_batch"]

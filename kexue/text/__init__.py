"""Floor 1, text: tokenizers (:mod:`kexue.text.tokenizer`: WordPiece with bert4keras's API, jieba
word + char pre-tokenisation; :mod:`kexue.text.hf`: ``tokenizer.json`` and SentencePiece ``spiece.model``
behind the same API, :func:`load_tokenizer` choosing by a folder's files) and vocabulary building."""
from kexue.text.hf import HFTokenizer, load_tokenizer, sentencepiece_tokenizer
from kexue.text.tokenizer import Tokenizer, build_vocab, jieba_words, load_vocab, pad_batch

__all__ = ["HFTokenizer", "Tokenizer", "build_vocab", "jieba_words", "load_tokenizer", "load_vocab", "pad_batch",
           "sentencepiece_tokenizer"]

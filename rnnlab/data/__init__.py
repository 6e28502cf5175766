"""Data: vocabularies, corpora and truncated-BPTT batches (NumPy only; no torch here)."""

from rnnlab.data.batches import EvalStreams, StreamBatcher
from rnnlab.data.corpus import BUILTIN, Corpus, build_vocab, load_builtin, load_corpus, read_text
from rnnlab.data.vocab import UNK, Vocab, tokenize_words

__all__ = ["BUILTIN", "Corpus", "build_vocab", "EvalStreams", "StreamBatcher", "UNK", "Vocab", "load_builtin", "load_corpus",
           "read_text", "tokenize_words"]

"""rnnlab: recurrent sequence models you can train, sample, inspect and trust.

Conventions used everywhere in the package:

* tensors are batch-first: tokens ``(B, T)``, inputs ``(B, T, I)``, hidden
  outputs ``(B, T, H)``, logits ``(B, T, V)``; one step drops the T axis;
* a recurrent state is a tuple over layers of each cell's state tuple, every
  tensor ``(B, H)`` (``(h,)`` for Elman and GRU, ``(h, c)`` for LSTM);
* losses are mean cross entropies in nats per token; bits per character (bpc)
  is that divided by ln 2.

The library never reads ``sys.argv``; :mod:`rnnlab.cli` is the shell.
"""

__version__ = "0.1.0"

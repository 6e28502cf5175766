"""The project's exceptions, in one place.

Every error that a user can cause (a bad file, a bad option, a foreign checkpoint)
is one of these. The shells (CLI, server) catch :class:`RnnlabError` and print its
message as one line; anything else is a bug and keeps its traceback.

Each class also subclasses the built-in exception a Python user would expect, so
``except ValueError`` still works for code that does not know about rnnlab.
"""

from __future__ import annotations


class RnnlabError(Exception):
    """Base class of every error rnnlab raises on purpose."""


class ConfigError(RnnlabError, ValueError):
    """A hyperparameter or option is invalid; the message lists every problem found."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class DataError(RnnlabError, ValueError):
    """A corpus cannot be used: missing, empty, binary, not UTF-8, too short."""


class VocabError(RnnlabError, KeyError):
    """A symbol is not in the model's vocabulary."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(RnnlabError, ValueError):
    """A checkpoint is missing, corrupt, foreign or does not match its weights."""


class TrainingError(RnnlabError, RuntimeError):
    """Training cannot go on (for example, the loss stayed non-finite)."""


class DownloadError(RnnlabError, OSError):
    """A dataset could not be fetched or failed its checksum."""


class OutputError(RnnlabError, OSError):
    """An output file (a plot, a report) cannot be written: its folder is missing, it is a folder, the disk is full."""


class NotFittedError(RnnlabError, ValueError, AttributeError):
    """An estimator (:class:`rnnlab.ngram.NGramLM`) was used before ``fit``, as scikit-learn's NotFittedError."""

"""Sequence classification: training, evaluation and prediction of a many-to-one RNN.

:func:`train_classifier` reads labelled sequences (:mod:`rnnlab.data.sequences`), splits
them (stratified, duplicates kept together), and trains an
:class:`~rnnlab.nn.classifier.RNNClassifier` with the loop every rnnlab model shares
(:func:`rnnlab.loop.run_loop`): the same optimisers, schedules, clipping, progress bar,
``metrics.jsonl``, checkpoints and exact resume as the language model. Its
:class:`ClassifierJob` shuffles the training examples every epoch (a pure function of
the seed and the epoch, so a resumed run draws the same batches), pads each batch to
its longest sequence and takes the (optionally class-weighted) cross entropy of the
softmax over the classes against the label.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rnnlab.checkpoint import BEST, CLASSIFIER, Checkpoint, load_checkpoint, save_checkpoint
from rnnlab.config import ClassifyRunConfig
from rnnlab.data.sequences import (
    LabelledData,
    class_weights,
    read_labelled,
    sampling_probabilities,
    split_examples,
    split_record,
)
from rnnlab.data.vocab import Vocab, tokenize_words
from rnnlab.errors import CheckpointError, ConfigError, DataError, VocabError
from rnnlab.engine import run_job
from rnnlab.metrics import classification_metrics, confusion_text
from rnnlab.nn.classifier import ClassifierEnsemble, RNNClassifier, build_classifier
from rnnlab.plots import check_writable, plot_confusion

BUCKET = 50  # batches sorted by length together (less padding, still shuffled)

__all__ = ["ClassifierJob", "evaluate_classifier", "load_classifier", "pad_batch", "predict", "predict_proba",
           "prefix_proba", "split_examples_of", "train_classifier"]


def pad_batch(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of ids (L,) or vectors (L, F) -> padded (B, T) or (B, T, F) and lengths (B,).

    The padding is zeros; the model never reads it into a sequence's last real state."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    t = int(lengths.max())
    first = seqs[0]
    out = np.zeros((len(seqs), t, *first.shape[1:]), dtype=first.dtype)
    for b, s in enumerate(seqs):
        out[b, :len(s)] = s
    return out, lengths


def encode_inputs(inputs: list[Any], vocab: Vocab | None, what: str = "input") -> list[np.ndarray]:
    """Text -> ids (L,) with ``vocab``; vectors stay (L, F) float32. An input with no tokens is an error."""
    if vocab is None:
        return [np.asarray(x, dtype=np.float32) for x in inputs]
    refuse_blank(inputs, what)
    out = []
    for i, x in enumerate(inputs):
        ids = vocab.encode(x)
        if len(ids) == 0:
            raise DataError(f"{_nth(inputs, i, what)} ({x!r}) holds no {vocab.level}s"[:300])
        out.append(ids)
    return out


def _nth(inputs: list[Any], i: int, what: str) -> str:
    return f"the {what}" if len(inputs) == 1 else f"{what} {i + 1}"


def refuse_blank(texts: list[Any], what: str = "input") -> None:
    """A :class:`DataError` naming the first text that is empty or only white space (training data
    refuse such examples, so no prediction is made for one)."""
    for i, x in enumerate(texts):
        if isinstance(x, str) and not x.strip():
            raise DataError(f"{_nth(texts, i, what)} ({x!r}) is empty or only white space"[:300])


TAUS = tuple(np.linspace(0.0, 1.0, 9))
"""The logit adjustment's tau values tried at each evaluation (``adjust="auto"``)."""


def shifted(probs: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    r"""Probabilities (N, C) with ``shift`` (C,) added to their logarithms and normalised again:
    :math:`p'_c \propto p_c e^{s_c}`; with :math:`s = -\tau \log \pi` the posterior of a prior
    flattened by tau (tau = 1: every class a priori equal). ``None``: ``probs`` unchanged."""
    if shift is None:
        return probs
    z = np.log(np.maximum(probs, 1e-300)) + shift  # (N, C)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@torch.no_grad()
def predict_proba(model: RNNClassifier, seqs: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, C) of every sequence, in batches of similar length, shifted by the model's
    ``logit_shift`` where it has one (:func:`shifted`)."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    order = np.argsort([len(s) for s in seqs], kind="stable")
    probs = np.zeros((len(seqs), model.num_classes))
    try:
        for s in range(0, len(seqs), batch_size):
            idx = order[s:s + batch_size]
            x, lengths = pad_batch([seqs[i] for i in idx])
            logits = model(torch.from_numpy(x).to(device), torch.from_numpy(lengths).to(device))  # (b, C)
            probs[idx] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
    finally:
        model.train(was_training)
    return shifted(probs, model.logit_shift)


@torch.no_grad()
def prefix_proba(model: RNNClassifier, seq: np.ndarray) -> np.ndarray:
    r"""Class probabilities (L, C) after every prefix of one sequence (ids (L,) or vectors (L, F)): row t is
    what :func:`predict_proba` gives :math:`x_{1..t+1}` alone, the many-to-one state read at every step.

    A forward classifier reads the sequence once (:meth:`~rnnlab.nn.classifier.RNNClassifier.prefix_logits`:
    its state after t + 1 steps is the state that prefix ends in); a bidirectional one reads the L prefixes
    as one padded batch, since its backward state starts again at every prefix's end."""
    if len(seq) == 0:
        raise DataError("the sequence is empty: it has no prefix to classify")
    if model.rnn_reverse is not None:
        return predict_proba(model, [seq[:t] for t in range(1, len(seq) + 1)])
    was_training = model.training
    model.eval()
    try:
        x = torch.from_numpy(np.asarray(seq)[None]).to(model.head.weight.device)  # (1, L) or (1, L, F)
        probs = torch.softmax(model.prefix_logits(x).double(), dim=-1).cpu().numpy()  # (L, C)
    finally:
        model.train(was_training)
    return shifted(probs, model.logit_shift)


def _scores(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Cross entropy (nats per sequence) and the classification metrics of predicted probabilities."""
    nll = -np.log(np.maximum(probs[np.arange(len(y)), y], 1e-300))
    return {"loss": float(nll.mean()), **classification_metrics(y, probs.argmax(axis=1), classes)}


def smoothed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None, eps: float,
                           prior: torch.Tensor) -> torch.Tensor:
    r"""The cross entropy of logits (N, C) against labels y (N,) smoothed toward the class prior:

    .. math::
        \ell_i = -(1 - \epsilon) \log p_{y_i} - \epsilon \sum_c \pi_c \log p_c, \qquad
        L = \frac{\sum_i w_{y_i} \ell_i}{\sum_i w_{y_i}}

    (``weights`` w per class, or none). The target puts :math:`\epsilon` of its mass on the
    training class frequencies :math:`\pi` rather than evenly on every class, so the network's
    probabilities keep the prior's shape (their optimum is :math:`(1 - \epsilon)\, p(y \mid x) +
    \epsilon \pi`) for the logit adjustment :math:`-\tau \log \pi` to act on; smoothing evenly
    would lift every rare class to at least :math:`\epsilon / C`, which the adjustment then lifts
    again. On balanced classes
    :math:`\pi_c = 1/C`: ordinary label smoothing. ``eps`` 0: the plain (weighted) cross entropy."""
    if eps == 0:
        return F.cross_entropy(logits, y, weight=weights)
    logp = F.log_softmax(logits, dim=-1)  # (N, C)
    per = -(1.0 - eps) * logp.gather(1, y[:, None])[:, 0] - eps * (logp @ prior.to(logp.dtype))  # (N,)
    if weights is None:
        return per.mean()
    w = weights[y].to(per.dtype)  # (N,)
    return (w * per).sum() / w.sum()


class ClassifierJob:
    """The :class:`~rnnlab.loop.Job` of a sequence classifier: shuffled, padded minibatches."""

    def __init__(self, cfg: ClassifyRunConfig, model: RNNClassifier, seqs: list[np.ndarray], y: np.ndarray,
                 split: dict[str, np.ndarray], classes: list[str], vocab: Vocab | None, feature_size: int,
                 device: torch.device):
        self.cfg, self.model, self.seqs, self.y, self.classes = cfg, model, seqs, y, classes
        self.vocab, self.feature_size, self.device = vocab, feature_size, device
        self.train_idx, self.val_idx = split["train"], split["val"]
        self.lengths = np.array([len(q) for q in seqs], dtype=np.int64)  # (N,) for bucketing by length
        self.batch_size = cfg.train.batch_size
        self.batches_per_epoch = max(1, math.ceil(len(self.train_idx) / self.batch_size))
        self.unit, self.items = "acc", "seqs"
        w = class_weights(y[self.train_idx], len(classes), cfg.classifier.balance)
        self.weights = None if w is None else torch.tensor(w, dtype=torch.float32, device=device)
        counts = np.bincount(y[self.train_idx], minlength=len(classes)).astype(np.float64)
        self.log_prior = np.log(np.maximum(counts, 1.0) / counts.sum())  # (C,): log pi of the training split
        self.prior = torch.tensor(np.exp(self.log_prior), dtype=torch.float32, device=device)  # (C,): pi
        self._seen = (0, -1)  # (epoch, batch index) of the last training batch
        self.shift: np.ndarray | None = None  # the last evaluation's -tau log pi (adjust "fixed" or "auto")
        self._batches: list[np.ndarray] = []
        self._order_epoch = -1
        self._acc = math.nan
        self._lm = math.nan  # the last batch's auxiliary language-model loss (nats per token), nan without one

    def start_epoch(self, epoch: int) -> None:
        """This epoch's order of training examples: a function of (seed, epoch) alone.

        Shuffled (or, with ``balance="sampling"``, drawn class-balanced), then bucketed:
        each run of :data:`BUCKET` batches is sorted by length and cut into batches, and
        the batches are shuffled, so a batch pads little and still mixes the data."""
        rng = np.random.default_rng([self.cfg.train.seed, epoch])
        n = len(self.train_idx)
        if self.cfg.classifier.balance == "sampling":
            p = sampling_probabilities(self.y[self.train_idx], len(self.classes))
            order = self.train_idx[rng.choice(n, size=n, replace=True, p=p)]
        else:
            order = self.train_idx[rng.permutation(n)]
        b, lengths = self.batch_size, self.lengths[order]
        batches = []
        for s in range(0, n, b * BUCKET):
            chunk = order[s:s + b * BUCKET][np.argsort(lengths[s:s + b * BUCKET], kind="stable")]
            batches += [chunk[k:k + b] for k in range(0, len(chunk), b)]
        self._batches = [batches[i] for i in rng.permutation(len(batches))]
        self._order_epoch = epoch

    def train_loss(self, epoch: int, index: int) -> tuple[torch.Tensor, int, dict[str, float]]:
        if self._order_epoch != epoch:  # resumed in the middle of an epoch
            self.start_epoch(epoch)
        idx = self._batches[index]
        self._seen = (epoch, index)  # where training is: select="last" ranks checkpoints by it
        x, lengths = pad_batch([self.seqs[i] for i in idx])
        y = torch.from_numpy(self.y[idx]).to(self.device)  # (b,)
        logits, lm = self.model.member_train_outputs(torch.from_numpy(x).to(self.device),
                                                     torch.from_numpy(lengths).to(self.device))  # (K, b, C), (K,)
        k = logits.shape[0]  # each member its own loss (their mean): they learn independently
        loss = smoothed_cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(k), self.weights,
                                      self.cfg.classifier.label_smoothing, self.prior)
        self._acc = float((logits.mean(0).argmax(-1) == y).float().mean())
        self._lm = math.nan
        if lm is not None:  # the auxiliary language model (ClassifierConfig.lm_weight)
            self._lm = float(lm.detach().mean())
            loss = loss + self.cfg.classifier.lm_weight * lm.mean()
        return loss, len(idx), {}

    def step_done(self, ok: bool) -> None:
        pass

    def train_metrics(self, loss: float) -> dict[str, float]:
        return {"loss": loss, "acc": self._acc, **({} if math.isnan(self._lm) else {"lm": self._lm})}

    def evaluate(self) -> dict[str, float]:
        """The validation split's metrics at the logit adjustment's tau (reported as ``tau``, and kept for the
        checkpoint): ``adjust="fixed"`` the configured one, ``"auto"`` the one of :data:`TAUS` that maximises
        accuracy + balanced accuracy there, ``"none"`` none."""
        self.model.logit_shift = None  # the plain softmax while it trains
        probs = predict_proba(self.model, [self.seqs[i] for i in self.val_idx], self.cfg.train.eval_batch_size * 8)
        y = self.y[self.val_idx]
        adjust = self.cfg.classifier.adjust
        taus = TAUS if adjust == "auto" else (self.cfg.classifier.tau,) if adjust == "fixed" else (0.0,)
        best: tuple[float, float, dict[str, Any]] | None = None
        for tau in taus:
            s = _scores(shifted(probs, -tau * self.log_prior if tau else None), y, self.classes)
            if best is None or s["acc"] + s["balanced_acc"] > best[0] + 1e-12:
                best = (s["acc"] + s["balanced_acc"], tau, s)
        assert best is not None
        _, tau, s = best
        self.shift = -tau * self.log_prior if adjust != "none" else None
        m = {k: s[k] for k in ("loss", "acc", "balanced_acc", "macro_f1")}
        if adjust != "none":
            m["tau"] = float(tau)
        select = self.cfg.classifier.select
        if select == "last":  # every evaluation improves on the one before: best is the latest weights
            m["criterion"] = -(self._seen[0] + (self._seen[1] + 1) / max(len(self._batches), 1))  # -epochs trained
        elif select == "loss":
            m["criterion"] = m["loss"]
        elif select == "acc+balanced_acc":
            m["criterion"] = 2.0 - m["acc"] - m["balanced_acc"]
        else:
            m["criterion"] = 1.0 - m[select]  # lower is better
        return m

    def save(self, path: Path, train_state: dict[str, Any], optimizer: torch.optim.Optimizer,
             rng: dict[str, torch.Tensor]) -> None:
        save_checkpoint(path, model=self.model, config=self.cfg, vocab=self.vocab, train_state=train_state,
                        optimizer=optimizer, rng=rng, extra={"labels": self.classes, "feature_size": self.feature_size,
                                                             **({"logit_shift": self.shift.tolist()}
                                                                if self.shift is not None else {})})


# reading and splitting, the same way for training and evaluation -------------------------------

def _label_ids(labels: list[str], classes: list[str], source: str) -> np.ndarray:
    """Class ids (N,) of ``labels``; a label outside ``classes`` is a clear error."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"{source} has label(s) the model does not know: {', '.join(map(repr, unknown[:10]))}")
    return np.array([index[c] for c in labels], dtype=np.int64)


def _prepare(cfg: ClassifyRunConfig, vocab: Vocab | None = None, classes: list[str] | None = None
             ) -> tuple[LabelledData, list[str], np.ndarray, dict[str, np.ndarray], Vocab | None]:
    """Read the data of ``cfg``, its classes, label ids, split and (unless given) vocabulary."""
    dc = cfg.data
    data = read_labelled(dc.data, dc.builtin, dc.input_column, dc.label_column)
    classes = classes or data.classes
    y = _label_ids(data.labels, classes, data.source)
    split = split_examples(data.inputs, y, dc.val_fraction, dc.test_fraction, dc.split_seed)
    if len(split["train"]) == 0 or len(split["val"]) == 0:
        raise DataError(f"{data.source} is too small to split: {len(split['train'])} training and "
                        f"{len(split['val'])} validation examples")
    if vocab is None and data.kind == "text":
        if dc.level == "char":
            vocab = Vocab.from_text("".join(data.inputs))  # every split's characters: none is unknown at scoring
        else:
            vocab = Vocab.from_words((t for i in split["train"] for t in tokenize_words(data.inputs[i])), dc.min_count)
    return data, classes, y, split, vocab


def _check_same_data(run: Path, data: LabelledData, needs: str) -> None:
    """Refuse data that differ from those the run in ``run`` was trained on (their checksum in
    ``split.json``): the split re-made from other data would mix training examples into the others."""
    try:
        stored = json.loads((run / "split.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return  # a run from before split.json, or one whose record is damaged: nothing to compare with
    if isinstance(stored, dict) and stored.get("sha256") not in (None, data.sha256):
        raise DataError(f"{data.source} has changed since the run in {run} was trained (its checksum differs from "
                        f"split.json); {needs} needs the same data")


def train_classifier(cfg: ClassifyRunConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or, with ``cfg.train.resume``, continue) the classifier run in ``cfg.train.out``.

    Returns a summary: steps, epochs, why it stopped, the validation metrics of the last
    evaluation, and the test metrics of the best checkpoint (when there is a test split).
    """
    cfg = cfg.validate().with_absolute_paths()  # config.json then finds the data from any folder
    return run_job(ClassifierRecipe(cfg), progress)


class ClassifierRecipe:
    """A classifier's run on :func:`rnnlab.engine.run_job`: labelled data, split, model, summary with the test."""

    distributed, stop_on_success, speed_key = False, False, "seqs"

    def __init__(self, cfg: ClassifyRunConfig):
        self.cfg = cfg

    def load(self, path: Path) -> Checkpoint:
        return load_checkpoint(path).expect(CLASSIFIER)

    def prepare(self, out: Path, ckpt: Checkpoint | None, dist: Any) -> None:
        data, self.classes, self.y, self.split, self.vocab = _prepare(
            self.cfg, ckpt.vocab if ckpt else None, ckpt.labels if ckpt else None)
        self.record = split_record(data, self.y, self.classes, self.split)
        if ckpt:
            _check_same_data(out, data, "resume")
        self.feature_size = data.feature_size
        self.seqs = encode_inputs(data.inputs, self.vocab)

    def build(self) -> RNNClassifier | ClassifierEnsemble:
        v = self.vocab
        return build_classifier(self.cfg, len(self.classes), vocab_size=len(v) if v else 0,
                                feature_size=self.feature_size)

    def job(self, model: RNNClassifier, device: torch.device, ckpt: Checkpoint | None, dist: Any) -> ClassifierJob:
        return ClassifierJob(self.cfg, model, self.seqs, self.y, self.split, self.classes, self.vocab,
                             self.feature_size, device)

    def files(self) -> dict[str, Any]:
        return {**({"vocab.json": self.vocab.to_dict()} if self.vocab is not None else {}), "split.json": self.record}

    def desc(self) -> str:
        m, c = self.cfg.model, self.cfg.classifier
        one = f"{'bi' if c.bidirectional else ''}{m.cell} {m.num_layers}x{m.hidden_size}"
        return one if c.ensemble == 1 else f"{c.ensemble} x {one}"

    def summary(self, out: Path, result: Any, state: Any, job: ClassifierJob, device: torch.device, dist: Any
                ) -> dict[str, Any]:
        select, split = self.cfg.classifier.select, self.split
        summary: dict[str, Any] = {
            "classes": len(self.classes), "examples": {s: int(len(v)) for s, v in split.items()},
            # the criterion is the loop's ranking key (with select "last", minus the epochs trained): not a metric
            **{f"val_{k}": v for k, v in (result.last_val or {}).items() if k != "criterion"},
        }
        if select != "last" and math.isfinite(state.best_val):  # "last": the best checkpoint is the latest weights
            summary[f"best_val_{select}"] = (state.best_val if select == "loss" else
                                             (2.0 if select == "acc+balanced_acc" else 1.0) - state.best_val)
        if result.stopped != "interrupted" and len(split["test"]) and (out / BEST).exists():
            best, _ = load_classifier(out / BEST)  # with its logit adjustment
            s = _scores(predict_proba(best.to(device), [self.seqs[i] for i in split["test"]]), self.y[split["test"]],
                        self.classes)
            summary.update({f"test_{k}": s[k] for k in ("loss", "acc", "balanced_acc", "macro_f1")})
        return summary


# using a trained classifier --------------------------------------------------------------------

def load_classifier(path: str | Path) -> tuple[RNNClassifier, Checkpoint]:
    """The classifier (in eval mode) of a checkpoint or run folder (its best checkpoint first)."""
    ckpt = load_checkpoint(path).expect(CLASSIFIER)
    model = ckpt.build_model()
    model.eval()
    shift = ckpt.extra.get("logit_shift")
    if shift is not None:
        if not (isinstance(shift, list) and len(shift) == model.num_classes
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in shift)):
            raise CheckpointError(f"{ckpt.path}: its logit adjustment is malformed (expected {model.num_classes} "
                                  f"finite numbers)")
        model.logit_shift = np.asarray(shift, dtype=np.float64)
    return model, ckpt


def evaluate_classifier(path: str | Path, split: str = "test", data: str | None = None,
                        plot: str | Path | None = None) -> dict[str, Any]:
    """Score a classifier on a split of its own data (re-made from its config: the same split)
    or on every example of another ``data`` file or folder. Returns the metrics, the
    confusion matrix and its text form; ``plot`` writes the confusion matrix as a PNG."""
    if plot is not None:
        check_writable(plot)
    model, ckpt = load_classifier(path)
    cfg: ClassifyRunConfig = ckpt.config
    classes = ckpt.labels
    if data is not None:
        dc = cfg.data
        labelled = read_labelled(data, None, dc.input_column, dc.label_column, min_classes=1)
        inputs, y, source = labelled.inputs, _label_ids(labelled.labels, classes, data), data
    else:
        labelled, inputs, y = _split_of(ckpt, split)
        source = f"{split} split"
    if (ckpt.vocab is None) != (not inputs or not isinstance(inputs[0], str)):
        raise DataError(f"{source}: the classifier reads {'vectors' if ckpt.vocab is None else 'text'}, "
                        "the data hold the other kind")
    width = labelled.feature_size if ckpt.vocab is None else 0
    if width != model.feature_size:
        raise DataError(f"{source}: the classifier reads vectors of {model.feature_size} numbers a step, "
                        f"the data hold {width}")
    s = _scores(predict_proba(model, encode_inputs(inputs, ckpt.vocab)), y, classes)
    s.update({"checkpoint": str(ckpt.path), "data": source, "examples": int(len(y)),
              "confusion_text": confusion_text(s["confusion"], classes)})
    if plot is not None:
        plot_confusion(s["confusion"], classes, plot, title=f"{Path(ckpt.path).parent.name}: {source}, "
                                                          f"accuracy {s['acc']:.1%}")
        s["plot"] = str(plot)
    return s


def _split_of(ckpt: Checkpoint, split: str) -> tuple[LabelledData, list[Any], np.ndarray]:
    """A classifier's data re-made from its config, and one split's inputs and label ids (N,)."""
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, got {split!r}")
    labelled, _, y_all, parts, _ = _prepare(ckpt.config, ckpt.vocab, ckpt.labels)
    _check_same_data(Path(ckpt.path).parent, labelled, f"scoring its {split} split")
    idx = parts[split]
    if len(idx) == 0:
        raise DataError(f"the {split} split is empty (test_fraction {ckpt.config.data.test_fraction})")
    return labelled, [labelled.inputs[i] for i in idx], y_all[idx]


def split_examples_of(path: str | Path, split: str = "test") -> tuple[list[Any], list[str]]:
    """The inputs (texts, or vectors (L, F)) and labels of one split of a classifier's own data, in the order
    :func:`evaluate_classifier` scores them."""
    ckpt = load_checkpoint(path).expect(CLASSIFIER)
    _, inputs, y = _split_of(ckpt, split)
    return inputs, [ckpt.labels[i] for i in y]


def predict(path: str | Path, texts: list[str], top_k: int = 3) -> list[dict[str, Any]]:
    """The ``top_k`` classes and their probabilities for each text (a text classifier's)."""
    model, ckpt = load_classifier(path)
    if ckpt.vocab is None:
        raise ConfigError(f"{ckpt.path} classifies vector sequences; score a .jsonl file with rnnlab classify eval --data")
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    refuse_blank(texts, "text")
    for t in texts:
        unknown = ckpt.vocab.unknown(t) if ckpt.vocab.level == "char" else []
        if unknown:
            raise VocabError(f"{t!r} holds {len(unknown)} character(s) the classifier never saw: "
                             + ", ".join(map(repr, unknown[:10])))
    seqs = encode_inputs(texts, ckpt.vocab, what="text")
    probs = predict_proba(model, seqs)
    k = min(top_k, probs.shape[1])
    out = []
    for t, p in zip(texts, probs):
        top = np.argsort(-p, kind="stable")[:k]
        out.append({"input": t, "top": [{"label": ckpt.labels[i], "prob": float(p[i])} for i in top]})
    return out

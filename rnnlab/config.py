"""Typed configurations: every hyperparameter, its default and its meaning, in one place.

Each section is a dataclass whose fields carry a ``help`` text in their metadata; the
CLI is generated from these fields one to one (``hidden_size`` becomes
``--hidden-size``), and every run folder and checkpoint stores them as JSON.
:func:`from_dict` rejects unknown keys and :meth:`RunConfig.validate` reports every
problem at once, so a user fixes a command line in one go.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from rnnlab.errors import ConfigError

if TYPE_CHECKING:
    from rnnlab.tasks import Task

OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "plateau")
RECURRENT_INITS = ("default", "orthogonal", "identity")
GATE_INITS = ("default", "chrono")
POOLS = ("last", "mean", "last+mean")  # what a classifier's head reads of each direction (ClassifierConfig.pool)


def pool_list(pool: str) -> list[str]:
    """``ClassifierConfig.pool``, one pool or a comma list -> its pools (``"last, mean"`` -> last, mean)."""
    return [p.strip() for p in pool.split(",")]


def member_pools(pool: str, members: int) -> list[str]:
    """``ClassifierConfig.pool`` -> the pool of each of ``members`` members: the list taken in turn
    (``"last,mean"`` for 3 members: last, mean, last)."""
    pools = pool_list(pool)
    return [pools[k % len(pools)] for k in range(members)]


def _whole(v: Any) -> bool:
    """An integer, and not a bool (which Python counts as one)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help text (shown by ``--help``); ``choices``: a function giving the allowed values
    and a line on each (a registry's, read when asked), which the CLI offers and the config's checks name."""
    return field(default=default, metadata={"help": help, **kw})


def cell_choices() -> dict[str, str]:
    """The registered recurrent cells (:data:`rnnlab.nn.cells.CELL_TYPES`), each name with its one-line summary.

    The base layer names no cell: it asks the cells' registry, imported here when a cell name is first
    checked (importing this module imports no torch), so that a cell registered anywhere is a valid choice."""
    from rnnlab.nn.cells import cell_summaries  # the registry, at use: the one place the base layer looks up

    return cell_summaries()


FLOAT32_MAX = 3.4028234663852886e38

@dataclass
class DataConfig:
    """Where the text comes from and how it is cut into tokens."""

    data: str | None = _f(None, "a text file or a folder of text files; split 90%% train / 10%% validation")
    train: str | None = _f(None, "explicit training file (Penn Treebank style); use with --val")
    val: str | None = _f(None, "explicit validation file")
    test: str | None = _f(None, "explicit test file (optional)")
    format: Literal["text", "ptb-char"] = _f(
        "text", "text: the file as it is; ptb-char: Penn Treebank character files (space-separated symbols, "
                "one sentence a line) joined, with a newline as end of sentence")
    level: Literal["char", "word"] = _f("char", "token level: characters, or whitespace-separated words")
    min_count: int = _f(1, "word level: words seen fewer times in training become <unk>")
    val_fraction: float = _f(0.1, "fraction of a single corpus (its last characters) kept for validation")
    mmap: Literal["auto", "yes", "no"] = _f(
        "auto", "read the corpus through a memory map (for text larger than memory: one --data file, character "
                "level); auto: for files of 64 MiB or more")

    def problems(self) -> list[str]:
        p = []
        if self.mmap not in ("auto", "yes", "no"):
            p.append(f"mmap must be auto, yes or no, got {self.mmap!r}")
        if self.data is None and self.train is None:
            p.append("no corpus: give --data FILE_OR_FOLDER, or --train FILE --val FILE")
        if self.data is not None and self.train is not None:
            p.append("give either --data or --train/--val, not both")
        if self.train is not None and self.val is None:
            p.append("--train needs --val (the validation file)")
        if self.train is None and (self.val or self.test):
            p.append("--val/--test go with --train (a single --data corpus is split 90/10 by itself)")
        if self.format not in ("text", "ptb-char"):
            p.append(f"format must be text or ptb-char, got {self.format!r}")
        if self.min_count < 1:
            p.append(f"min_count must be >= 1, got {self.min_count}")
        if not 0.0 < self.val_fraction < 1.0:
            p.append(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        return p


@dataclass
class ModelConfig:
    """The network: input layer, recurrent stack, softmax output layer."""

    cell: str = _f("lstm", "recurrent cell", choices=cell_choices)  # the registered cells (rnnlab.nn.cells)
    hidden_size: int = _f(384, "units per recurrent layer")
    num_layers: int = _f(2, "stacked recurrent layers")
    dropout: float = _f(0.1, "dropout on each layer's output (between layers and before the softmax)")
    input: Literal["embedding", "onehot"] = _f("embedding", "input layer: a learned embedding, or the one-hot vector itself")
    embedding_size: int = _f(64, "embedding width (ignored for --input onehot)")
    fused: bool = _f(True, "teacher-forced passes use torch.nn.RNN/LSTM/GRU on the same weights")
    tie_weights: bool = _f(False, "the softmax layer's weights are the input embedding (Press & Wolf 2017; needs "
                                  "--input embedding and --embedding-size equal to --hidden-size)")

    def problems(self) -> list[str]:
        p = []
        cells = cell_choices()
        if self.cell not in cells:
            p.append(f"cell must be one of {', '.join(cells)}, got {self.cell!r}")
        if self.hidden_size < 1:
            p.append(f"hidden_size must be >= 1, got {self.hidden_size}")
        if self.num_layers < 1:
            p.append(f"num_layers must be >= 1, got {self.num_layers}")
        if not 0.0 <= self.dropout < 1.0:
            p.append(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.input not in ("embedding", "onehot"):
            p.append(f"input must be embedding or onehot, got {self.input!r}")
        if self.embedding_size < 1:
            p.append(f"embedding_size must be >= 1, got {self.embedding_size}")
        if self.tie_weights and self.input != "embedding":
            p.append("tie_weights needs input embedding (a one-hot input has no weights to share)")
        elif self.tie_weights and self.embedding_size != self.hidden_size:
            p.append(f"tie_weights needs embedding_size equal to hidden_size, got {self.embedding_size} and "
                     f"{self.hidden_size}")
        return p


@dataclass
class OptimConfig:
    """Optimiser, learning-rate schedule, clipping and weight decay."""

    optimizer: Literal["adam", "sgd", "rmsprop"] = _f("adam", "adam, sgd (with momentum) or rmsprop")
    lr: float = _f(4e-3, "peak learning rate")
    momentum: float = _f(0.9, "momentum for sgd and rmsprop")
    weight_decay: float = _f(0.0, "L2 weight decay (AdamW-style decoupled for adam)")
    clip_norm: float = _f(5.0, "clip the global gradient norm to this value (0: off)")
    clip_value: float = _f(0.0, "clip every gradient element to [-v, v] (0: off); applied before --clip-norm")
    lr_schedule: Literal["constant", "cosine", "plateau"] = _f(
        "cosine", "constant, cosine (with warm-up, to --min-lr-ratio * lr at --decay-steps) or plateau (decay when validation stalls)")
    warmup_steps: int = _f(0, "linear warm-up steps (constant and cosine)")
    decay_steps: int = _f(0, "cosine: steps until the minimum; 0 means --max-steps")
    min_lr_ratio: float = _f(0.05, "cosine: final learning rate as a fraction of --lr")
    plateau_factor: float = _f(0.5, "plateau: multiply the learning rate by this when validation stalls")
    plateau_patience: int = _f(1, "plateau: evaluations without improvement before decaying")

    def problems(self) -> list[str]:
        p = []
        if self.optimizer not in OPTIMIZERS:
            p.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            p.append(f"lr must be a positive number, got {self.lr}")
        elif self.lr > FLOAT32_MAX:  # the optimiser applies it to float32 weights
            p.append(f"lr must be at most {FLOAT32_MAX:.4g} (float32's largest number), got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            p.append(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            p.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.clip_norm < 0 or self.clip_value < 0:
            p.append("clip_norm and clip_value must be >= 0 (0 turns clipping off)")
        if self.lr_schedule not in SCHEDULES:
            p.append(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0 or self.decay_steps < 0:
            p.append("warmup_steps and decay_steps must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            p.append(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.plateau_factor < 1.0:
            p.append(f"plateau_factor must lie in (0, 1), got {self.plateau_factor}")
        if self.plateau_patience < 0:
            p.append(f"plateau_patience must be >= 0, got {self.plateau_patience}")
        return p


@dataclass
class CuresConfig:
    """Cures for vanishing and exploding gradients beyond clipping (which is in the optimiser's options)."""

    recurrent_init: Literal["default", "orthogonal", "identity"] = _f(
        "default", "recurrent weights: default (PyTorch's uniform), orthogonal (each gate block) or identity "
                   "(IRNN, Le et al. 2015: each gate block I, biases 0)")
    norm_reg: float = _f(0.0, "weight of the norm-preserving regulariser of Pascanu et al. 2013 (0: off); it sums "
                              "T - 1 terms, so scale it down as T grows; training then runs the unrolled path")
    gate_init: Literal["default", "chrono"] = _f(
        "default", "gate biases of the LSTM and GRU: default (PyTorch's uniform) or chrono (Tallec & Ollivier "
                   "2018: the keep gate's bias log u, u ~ U[1, T_max - 1], so the cell starts out remembering "
                   "over up to T_max steps)")
    chrono_max: int = _f(0, "chrono: T_max, the longest dependency expected (0: the task's sequence length)")

    def problems(self) -> list[str]:
        p = []
        if self.recurrent_init not in RECURRENT_INITS:
            p.append(f"recurrent_init must be one of {', '.join(RECURRENT_INITS)}, got {self.recurrent_init!r}")
        if self.gate_init not in GATE_INITS:
            p.append(f"gate_init must be one of {', '.join(GATE_INITS)}, got {self.gate_init!r}")
        if not _whole(self.chrono_max) or not (self.chrono_max == 0 or self.chrono_max >= 3):
            p.append(f"chrono_max must be 0 (the task's length) or an integer >= 3, got {self.chrono_max!r}")
        if not (isinstance(self.norm_reg, (int, float)) and math.isfinite(self.norm_reg) and self.norm_reg >= 0):
            p.append(f"norm_reg must be a number >= 0, got {self.norm_reg!r}")
        return p


FEEDINGS = ("teacher", "free-raw", "free-sample", "free-argmax", "scheduled", "professor")


@dataclass
class FeedingConfig:
    """What the network reads at each step while it trains (teacher forcing and its alternatives)."""

    feeding: Literal["teacher", "free-raw", "free-sample", "free-argmax", "scheduled", "professor"] = _f(
        "teacher", "teacher (the true previous token), free-raw (its own softmax), free-sample / free-argmax "
                   "(a one-hot of its own draw / argmax), scheduled (scheduled sampling) or professor (professor "
                   "forcing)")
    feed_grad: Literal["auto", "yes", "no"] = _f(
        "auto", "free-*: let gradients flow through the fed value (straight-through for one-hots); auto: "
                "yes for free-raw, no for the others")
    feed_carry: Literal["fed", "teacher"] = _f("fed", "free-* and scheduled: the state carried to the next batch "
                                                      "is the one the fed run left, or a teacher-forced one")
    schedule: Literal["linear", "exponential", "inverse-sigmoid"] = _f(
        "inverse-sigmoid", "scheduled: eps_i, the probability of feeding the true token at step i")
    schedule_k: float | None = _f(
        None, "scheduled: the schedule's k (unset: its default, linear 1, exponential 0.9996, inverse-sigmoid 300). "
              "linear: eps at step 0, >= 0 (0 with --schedule-min m: eps = m throughout); exponential: in (0, 1]; "
              "inverse-sigmoid: >= 1")
    schedule_c: float = _f(2.5e-4, "scheduled, linear: eps_i = max(min, k - c i)")
    schedule_min: float = _f(0.0, "scheduled, linear: the floor of eps_i")
    model_token: Literal["sample", "argmax"] = _f("sample", "scheduled and professor: the model's own token is a "
                                                            "draw from its softmax or its argmax")
    coin: Literal["token", "sequence"] = _f("token", "scheduled: one coin per token or per sequence")
    band_low: float = _f(0.75, "professor: the adversarial term acts while the discriminator's accuracy is above this")
    band_high: float = _f(0.99, "professor: ... and below this")
    adv_weight: float = _f(1.0, "professor: the weight of the adversarial term")
    disc_lr: float = _f(1e-3, "professor: the discriminator's Adam learning rate")
    disc_hidden: int = _f(64, "professor: the discriminator's GRU and MLP width")
    disc_outputs: bool = _f(True, "professor: the discriminator also sees the output distributions")

    def options(self) -> dict[str, Any]:
        """The keyword options of :func:`rnnlab.feeding.make_feeding` for this strategy."""
        f = self.feeding
        if f.startswith("free-"):
            o: dict[str, Any] = {"carry": self.feed_carry}
            if self.feed_grad != "auto":
                o["grad"] = self.feed_grad == "yes"
            return o
        if f == "scheduled":
            o = {"schedule": self.schedule, "model_token": self.model_token, "per": self.coin, "carry": self.feed_carry}
            if self.schedule_k is not None:
                o["k"] = self.schedule_k
            if self.schedule == "linear":
                o.update(c=self.schedule_c, eps_min=self.schedule_min)
            return o
        if f == "professor":
            return {"band": (self.band_low, self.band_high), "adv_weight": self.adv_weight, "lr": self.disc_lr,
                    "use_outputs": self.disc_outputs, "model_token": self.model_token,
                    "hidden_size": self.disc_hidden, "mlp_size": self.disc_hidden}
        return {}

    def problems(self) -> list[str]:
        p = []
        if self.feeding not in FEEDINGS:
            p.append(f"feeding must be one of {', '.join(FEEDINGS)}, got {self.feeding!r}")
        if not 0.0 <= self.band_low < self.band_high <= 1.0:
            p.append(f"band_low and band_high must satisfy 0 <= low < high <= 1, got {self.band_low}, {self.band_high}")
        if self.disc_hidden < 1:
            p.append(f"disc_hidden must be >= 1, got {self.disc_hidden}")
        if not self.disc_lr > 0:
            p.append(f"disc_lr must be a positive number, got {self.disc_lr}")
        return p


@dataclass
class TrainConfig:
    """The truncated-BPTT loop: batches, stop conditions, evaluation, logging."""

    batch_size: int = _f(32, "B: parallel contiguous streams per batch")
    seq_len: int = _f(50, "T: characters per stream per batch (the BPTT truncation length)")
    max_steps: int = _f(0, "stop after this many optimiser steps (0: no limit)")
    max_epochs: float = _f(0.0, "stop after this many passes over the training split (0: no limit)")
    time_budget: float = _f(0.0, "stop after this many seconds of training, summed over resumes (0: no limit)")
    clock: Literal["wall", "cpu"] = _f(
        "wall", "what --time-budget and the times reported count: wall-clock seconds, or the CPU seconds of this "
                "process (a fair budget on a machine shared with other work; with N busy threads it runs N times "
                "as fast as the wall clock)")
    eval_interval: int = _f(500, "evaluate on the whole validation split and checkpoint every N steps")
    eval_batch_size: int = _f(32, "streams used to evaluate the validation split (every character counted once)")
    log_interval: int = _f(10, "write a metrics.jsonl line every N steps")
    plot_interval_s: float = _f(30.0, "redraw curves.png at an evaluation at most every N seconds, and at the end "
                                      "(0: at every evaluation; drawing takes a second or two)")
    seed: int = _f(1, "seed for weights, dropout and everything random in training")
    out: str = _f("runs/latest", "run folder: config, vocabulary, metrics, plots and checkpoints")
    resume: bool = _f(False, "continue the run in --out from its last checkpoint, or start it where --out holds "
                             "no checkpoint yet (so one command line restarts a run killed at any moment)")
    max_bad_steps: int = _f(10, "stop after this many consecutive steps with a non-finite loss or gradient")
    checkpoint_interval_s: float = _f(
        0.0, "also save last.safetensors every N seconds of wall time (0: only every eval_interval steps); for a "
             "job killed more often than it evaluates: the run resumes as if it had not stopped")
    threads: int = _f(0, "intra-op CPU threads (0: PyTorch's default, one per core)")
    device: str = _f("cpu", "cpu, cuda, cuda:N or auto")

    def problems(self) -> list[str]:
        p = []
        for name in ("batch_size", "seq_len", "eval_interval", "eval_batch_size", "log_interval", "max_bad_steps"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_epochs", "time_budget", "threads", "checkpoint_interval_s", "plot_interval_s"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.clock not in ("wall", "cpu"):
            p.append(f"clock must be wall or cpu, got {self.clock!r}")
        if not (self.max_steps or self.max_epochs or self.time_budget):
            p.append("no stop condition: give --max-steps, --max-epochs or --time-budget")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            p.append(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        if not self.out.strip():
            p.append("out must name the run's folder, got an empty name")
        return p


PATH_FIELDS = ("data", "train", "val", "test")  # the data section's fields that name files or folders


def absolute_path(value: Any) -> Any:
    """A file or folder named relative to the working folder, made absolute (a run's config then finds its
    data from any folder); a built-in corpus (``builtin:...``), a URL and None stay as they are."""
    if not isinstance(value, str) or not value or value.startswith("builtin:") or "://" in value:
        return value
    return os.path.abspath(value)


class RunSections:
    """What every run config (a dataclass of sections, each with ``problems()``) shares."""

    def cross_problems(self) -> list[str]:
        """Problems that involve more than one section."""
        return []

    def validate(self) -> Any:
        """Raise one :class:`ConfigError` listing every problem of every section, or return ``self``."""
        problems = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            section = getattr(self, f.name)
            wrong = type_problems(section)
            problems += wrong or section.problems()  # a section's range checks assume the right types
        problems += self.cross_problems()
        if problems:
            raise ConfigError(problems)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def with_absolute_paths(self) -> Any:
        """A copy whose data files and folders are absolute paths (see :func:`absolute_path`)."""
        data = self.data  # type: ignore[attr-defined]
        fixed = {k: absolute_path(getattr(data, k)) for k in PATH_FIELDS if hasattr(data, k)}
        return dataclasses.replace(self, data=dataclasses.replace(data, **fixed))  # type: ignore[type-var]


@dataclass
class RunConfig(RunSections):
    """Everything a training run needs; saved as ``config.json`` in the run folder."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cures: CuresConfig = field(default_factory=CuresConfig)
    feeding: FeedingConfig = field(default_factory=FeedingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def cross_problems(self) -> list[str]:
        if self.cures.norm_reg > 0 and self.feeding.feeding != "teacher":
            return ["norm_reg works with teacher forcing only (--feeding teacher)"]
        return []


@dataclass
class ClassifyDataConfig:
    """Labelled sequences for a classifier and how they are split."""

    data: str | None = _f(None, "a folder of <label>.txt files (one example a line), or a .csv, .tsv or .jsonl file")
    builtin: str | None = _f(None, "a built-in dataset instead of --data: digits (8x8 images, a row a time step)")
    input_column: str = _f("text", ".csv/.tsv column or .jsonl key of the input (text, or a list of vectors)")
    label_column: str = _f("label", ".csv/.tsv column or .jsonl key of the label")
    level: Literal["char", "word"] = _f("char", "text inputs: a sequence of characters, or of whitespace-separated words")
    min_count: int = _f(1, "word level: words seen fewer times in training become <unk>")
    val_fraction: float = _f(0.1, "fraction of each class's distinct inputs held out for validation")
    test_fraction: float = _f(0.1, "fraction of each class's distinct inputs held out for the test")
    split_seed: int = _f(0, "seed of the split (identical inputs always share a split)")

    def problems(self) -> list[str]:
        p = []
        if not self.data and not self.builtin:
            p.append("no data: give --data FOLDER_OR_FILE or --builtin digits")
        if self.data and self.builtin:
            p.append("give either --data or --builtin, not both")
        if self.level not in ("char", "word"):
            p.append(f"level must be char or word, got {self.level!r}")
        if self.min_count < 1:
            p.append(f"min_count must be >= 1, got {self.min_count}")
        if not (0.0 <= self.val_fraction < 1.0 and 0.0 <= self.test_fraction < 1.0
                and self.val_fraction + self.test_fraction < 1.0):
            p.append(f"val_fraction and test_fraction must be >= 0 with a sum below 1, got {self.val_fraction} "
                     f"and {self.test_fraction}")
        if self.val_fraction == 0.0:
            p.append("val_fraction must be > 0: the validation split chooses the best checkpoint")
        return p


@dataclass
class ClassifierConfig:
    """What turns the recurrent stack into a classifier, and how classes are balanced."""

    bidirectional: bool = _f(True, "also read each sequence backwards and join the two final states")
    balance: Literal["none", "weights", "sqrt-weights", "sampling"] = _f(
        "sqrt-weights", "class imbalance: none, weights (loss weight N/(C n_c)), sqrt-weights (1/sqrt(n_c)) "
                        "or sampling (draw every class equally often)")
    select: Literal["last", "loss", "acc", "balanced_acc", "macro_f1", "acc+balanced_acc"] = _f(
        "last", "what chooses the best checkpoint: last (the latest weights: the cosine schedule has annealed them "
                "by the end; a small validation split is too noisy to choose among checkpoints), or a validation "
                "metric (acc+balanced_acc: their sum)")
    adjust: Literal["fixed", "auto", "none"] = _f(
        "fixed", "logit adjustment (Menon et al. 2021): predict argmax_c log p_c - tau log pi_c, pi the training "
                 "class frequencies; fixed: tau = --tau; auto: tau in 0, 0.125, ..., 1 chosen at each evaluation "
                 "to maximise validation accuracy + balanced accuracy; kept in the checkpoint; none: the plain argmax")
    tau: float = _f(0.25, "--adjust fixed: the logit adjustment's tau, in [0, 1] (0: the plain argmax, best for "
                         "accuracy; 1: every class a priori equal, best for balanced accuracy)")
    ensemble: int = _f(3, "independent RNNs (each its own initial weights and dropout) trained side by side on the "
                          "same batches, sharing the budget; they predict the mean of their probabilities")
    input_dropout: float = _f(0.1, "training, text inputs: zero each time step's whole input (a character's or word's "
                                   "embedding) with this probability, the others scaled by 1/(1-p)")
    label_smoothing: float = _f(0.0, "training: the target puts this much probability on the training class "
                                     "frequencies (on a balanced set: evenly on every class)")
    lm_weight: float = _f(0.0, "training, text inputs: add this weight times an auxiliary language-model loss: each "
                               "direction's state at every step predicts the next character or word it reads (the "
                               "end after the last), through a head of its own used in training only; 0: none")
    pool: str = _f(
        "last", "what the head reads of each direction: last (its state after the sequence's last element), mean "
                "(the mean of its states over the sequence) or last+mean (both); a comma list gives the ensemble's "
                "members one each, in turn (last,mean,last+mean: one member of each)")

    def problems(self) -> list[str]:
        p = []
        if self.balance not in ("none", "weights", "sqrt-weights", "sampling"):
            p.append(f"balance must be none, weights, sqrt-weights or sampling, got {self.balance!r}")
        if self.select not in SELECTS:
            p.append(f"select must be {', '.join(SELECTS[:-1])} or {SELECTS[-1]}, got {self.select!r}")
        if self.adjust not in ("fixed", "auto", "none"):
            p.append(f"adjust must be fixed, auto or none, got {self.adjust!r}")
        if not 0.0 <= self.tau <= 1.0:
            p.append(f"tau must be in [0, 1], got {self.tau!r}")
        if any(q not in POOLS for q in pool_list(self.pool)):
            p.append(f"pool must be {', '.join(POOLS[:-1])} or {POOLS[-1]}, or a comma list of them, "
                     f"got {self.pool!r}"[:300])
        if self.ensemble < 1:
            p.append(f"ensemble must be >= 1, got {self.ensemble}")
        for name in ("input_dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                p.append(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (math.isfinite(self.lm_weight) and self.lm_weight >= 0):
            p.append(f"lm_weight must be a number >= 0, got {self.lm_weight!r}")
        return p


SELECTS = ("last", "loss", "acc", "balanced_acc", "macro_f1", "acc+balanced_acc")


def _classify_model() -> ModelConfig:
    # each member of the ensemble (ClassifierConfig.ensemble, 3) a bidirectional GRU of 128 units reading a
    # 64-wide embedding, dropout 0.5 before its softmax: with input dropout 0.1 and weight decay 0.1 the best
    # measured on the word sets and names in 5 CPU-minutes (docs/benchmarks.md, results/classify.md)
    return ModelConfig(cell="gru", hidden_size=128, num_layers=1, dropout=0.5, embedding_size=64)


def _classify_classifier() -> ClassifierConfig:
    # the three members' heads read differently (the last state, the mean state, both): a lower test cross
    # entropy than three alike members, accuracy level within the runs' noise (docs/benchmarks.md). A saved
    # config without the field (an older run folder) is read as "last".
    return ClassifierConfig(pool="last,mean,last+mean")


def _classify_optim() -> OptimConfig:
    return OptimConfig(lr=3e-3, weight_decay=0.1)


def _classify_train() -> TrainConfig:
    return TrainConfig(batch_size=64, eval_interval=250, out="runs/classify")


@dataclass
class ClassifyRunConfig(RunSections):
    """Everything a classifier's training run needs; saved as ``config.json`` in the run folder."""

    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    model: ModelConfig = field(default_factory=_classify_model)
    classifier: ClassifierConfig = field(default_factory=_classify_classifier)
    optim: OptimConfig = field(default_factory=_classify_optim)
    train: TrainConfig = field(default_factory=_classify_train)


@dataclass
class TaskConfig:
    """Which long-memory task (:mod:`rnnlab.tasks`), how long, and how its sequences are drawn."""

    name: Literal["adding", "copy", "temporal-order"] = _f("adding", "the task: adding, copy or temporal-order")
    length: int = _f(100, "T: steps per sequence (adding, temporal-order) or the delay (copy)")
    copy_len: int = _f(10, "copy: K, symbols to remember")
    symbols: int = _f(8, "copy: S, the alphabet's size")
    train_size: int = _f(10000, "training sequences per epoch (with --fresh, an epoch is a unit of progress only)")
    fresh: bool = _f(True, "draw new training sequences for every batch (seeded by data seed, epoch and batch); "
                           "--no-fresh: one fixed training set of train_size sequences, reshuffled every epoch")
    val_size: int = _f(1000, "validation sequences (one fixed set)")
    data_seed: int = _f(0, "seed of every generated sequence (training and validation); --seed seeds the weights")
    stop_on_success: bool = _f(True, "stop at the first evaluation that solves the task (metric below baseline / 10) "
                                     "and report the time and steps it took; --no-stop-on-success trains on to "
                                     "the stop condition")

    def make(self) -> Task:
        """The :class:`~rnnlab.tasks.Task` this section describes."""
        from rnnlab.tasks import make_task  # at use, as cell_choices: the tasks' module sits above this one

        extra = {"copy_len": self.copy_len, "symbols": self.symbols} if self.name == "copy" else {}
        return make_task(self.name, self.length, **extra)

    def problems(self) -> list[str]:
        from rnnlab.tasks import TASKS

        p = []
        if self.name not in TASKS:
            p.append(f"task must be one of {', '.join(TASKS)}, got {self.name!r}")
        else:
            try:
                self.make()
            except ConfigError as e:
                p.extend(e.problems)
        for name in ("train_size", "val_size"):
            v = getattr(self, name)
            if not _whole(v) or v < 1:
                p.append(f"{name} must be an integer >= 1, got {v!r}")
        return p


def _task_model() -> ModelConfig:
    # one layer and a one-hot input: the tasks' alphabets are tiny, and the literature's
    # baselines (Hochreiter & Schmidhuber; Le et al.; Arjovsky et al.) use one layer, no dropout
    return ModelConfig(cell="lstm", hidden_size=128, num_layers=1, dropout=0.0, input="onehot")


def _task_optim() -> OptimConfig:
    # Adam with the gradient clipped to norm 1, a constant rate, the same for every cell: at 3e-3 an LSTM of 128
    # units solves the adding problem at T = 100 in about 1,250 steps; at 1e-3 it had not after 1,865
    # (benchmarks/bench_long_memory.py measures the whole grid)
    return OptimConfig(lr=3e-3, clip_norm=1.0, lr_schedule="constant")


def _task_train() -> TrainConfig:
    # no stop condition by default: train_task then gives rnnlab.task_train.DEFAULT_TIME_BUDGET, and whatever the
    # user gives alone is the only limit. Evaluations every 50 steps (about 1-3 s of training) time a success to a
    # few percent.
    return TrainConfig(batch_size=50, max_steps=0, eval_interval=50, eval_batch_size=500, log_interval=10,
                       out="runs/task")


@dataclass
class TaskRunConfig(RunSections):
    """Everything a long-memory task's training run (:func:`rnnlab.task_train.train_task`) needs; saved as
    ``config.json`` in the run folder.

    ``train.seq_len`` is not used (a task's sequences are read whole, T steps of BPTT);
    ``train.eval_batch_size`` is the number of validation sequences scored at once.
    """

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=_task_model)
    cures: CuresConfig = field(default_factory=CuresConfig)
    optim: OptimConfig = field(default_factory=_task_optim)
    train: TrainConfig = field(default_factory=_task_train)

    def cross_problems(self) -> list[str]:
        if _whole(self.task.train_size) and _whole(self.train.batch_size) and 1 <= self.task.train_size \
                < self.train.batch_size:
            return [f"train_size ({self.task.train_size}) must be at least batch_size ({self.train.batch_size})"]
        return []

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskRunConfig:
        """From (nested) JSON, rejecting unknown keys and wrong types (every problem at once)."""
        return from_dict(cls, d)


@dataclass
class NGramConfig:
    """A count-based n-gram language model (:class:`rnnlab.ngram.NGramLM`)."""

    order: int = _f(5, "n: the model predicts from the previous n - 1 tokens")
    smoothing: Literal["kneser-ney", "witten-bell", "add-k", "mle"] = _f(
        "kneser-ney", "interpolated modified Kneser-Ney, Witten-Bell, add-k (Laplace at k = 1) or maximum likelihood")
    k: float = _f(1.0, "add-k: the count added to every n-gram")
    sentences: bool = _f(False, "each line is a sentence: no n-gram spans a line end, as in KenLM and SRILM "
                                "(default: one stream, as the RNN reads it)")


@dataclass
class SampleConfig:
    """How text is drawn from a trained model."""

    strategy: Literal["sample", "argmax", "beam"] = _f("sample", "sample (from the softmax), argmax (greedy) or beam (beam search)")
    length: int = _f(500, "tokens to generate after the prime")
    prime: str = _f("", "text the model reads before it writes (its state is carried forward)")
    temperature: float = _f(1.0, "divide the logits by this: < 1 sharpens, > 1 flattens")
    top_k: int = _f(0, "sample only among the k most probable tokens (0: all)")
    top_p: float = _f(1.0, "sample only from the smallest set whose probability reaches p (nucleus)")
    beam_width: int = _f(5, "beam search: hypotheses kept per step")
    num_samples: int = _f(1, "independent streams generated at once")
    seed: int | None = _f(None, "seed for the sampler (unset: a fresh random seed)")

    def validate(self) -> SampleConfig:
        p = type_problems(self)
        if p:
            raise ConfigError(p)
        if self.strategy not in ("sample", "argmax", "beam"):
            p.append(f"strategy must be sample, argmax or beam, got {self.strategy!r}")
        if self.length < 0:
            p.append(f"length must be >= 0, got {self.length}")
        p += sampling_problems(self.temperature, self.top_k, self.top_p)
        if self.beam_width < 1:
            p.append(f"beam_width must be >= 1, got {self.beam_width}")
        if self.beam_width > MAX_BEAM:
            p.append(f"beam_width must be <= {MAX_BEAM:,} (each step scores beam_width x vocabulary continuations), "
                     f"got {self.beam_width:,}")
        if self.num_samples < 1:
            p.append(f"num_samples must be >= 1, got {self.num_samples}")
        if p:
            raise ConfigError(p)
        return self


MAX_BEAM = 10_000  # widest beam search: its scores are beam_width x vocabulary numbers a step


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, computed once per class: it evaluates every annotation (strings, under
    ``from __future__ import annotations``), and a config is checked on every request the server answers."""
    return typing.get_type_hints(cls)


def type_problems(cfg: Any) -> list[str]:
    """The fields of the dataclass ``cfg`` whose values are not of their declared type (a config built
    in Python, not through :func:`from_dict`, which checks them as it reads)."""
    hints = type_hints(type(cfg))
    p = []
    for f in dataclasses.fields(cfg):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            p += type_problems(getattr(cfg, f.name))
            continue
        if get_origin(tp) is Literal:  # a choice: the config's own checks name the choices
            continue
        value = getattr(cfg, f.name)
        try:
            _check_type(value, tp)
        except TypeError as e:
            p.append(f"{f.name}: {e}")
            continue
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every `x < 0` check
            p.append(f"{f.name} must be a finite number, got {value}")
        if f.name.endswith("seed"):  # split_seed, data_seed too
            p += seed_problems(f.name, value)
    return p


def seed_problems(name: str, value: Any) -> list[str]:
    """A seed the generators take: a whole number from 0 to 2**63 - 1 (NumPy refuses negative ones)."""
    if isinstance(value, int) and not 0 <= value < 2**63:
        return [f"{name} must be a whole number from 0 to 2**63 - 1, got {value}"]
    return []


def sampling_problems(temperature: float, top_k: int, top_p: float) -> list[str]:
    """What is wrong with these sampler settings (shared by every sampler)."""
    p = []
    if not (temperature > 0 and math.isfinite(temperature)):
        p.append(f"temperature must be a positive number, got {temperature}")
    if top_k < 0:
        p.append(f"top_k must be >= 0, got {top_k}")
    if not 0.0 < top_p <= 1.0:
        p.append(f"top_p must lie in (0, 1], got {top_p}")
    return p


def _check_type(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` where that is lossless, else raise TypeError."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise TypeError(f"expected one of {', '.join(map(repr, get_args(tp)))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg)
            except TypeError:
                pass
        raise TypeError(f"expected {tp}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"expected a string, got {value!r}")
    return value


T = typing.TypeVar("T")


def from_dict(cls: type[T], d: dict[str, Any], where: str = "") -> T:
    """Build ``cls`` from a (nested) dict, rejecting unknown keys and wrong types.

    Every problem is collected and raised together as one :class:`ConfigError`.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"{where or cls.__name__}: expected an object, got {type(d).__name__}")
    hints = type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    problems: list[str] = []
    kwargs: dict[str, Any] = {}
    for key in d:
        if key not in fields:
            problems.append(f"unknown key {where}{key!r} (known: {', '.join(fields)})")
    for name in fields:
        if name not in d:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            try:
                kwargs[name] = from_dict(tp, d[name], where=f"{where}{name}.")
            except ConfigError as e:
                problems.extend(e.problems)
            continue
        try:
            kwargs[name] = _check_type(d[name], tp)
            choices = fields[name].metadata.get("choices")
            if choices is not None and kwargs[name] not in (allowed := tuple(choices())):
                raise TypeError(f"expected one of {', '.join(map(repr, allowed))}, got {kwargs[name]!r}")
        except TypeError as e:
            problems.append(f"{where}{name}: {e}")
    if problems:
        raise ConfigError(problems)
    return cls(**kwargs)

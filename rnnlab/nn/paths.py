r"""Which fast path runs: one door, one description of the machine and the network, a reason for every choice.

The reference math lives in the cells (:mod:`rnnlab.nn.cells`) and the unroller (:mod:`rnnlab.nn.stack`).
Beside it run faster paths that compute the same function: hand-written recurrences in C++ or Python
(:mod:`rnnlab.nn.sequence`), torch's fused modules (oneDNN's LSTM on the CPU, cuDNN on a GPU), the C++ decision
loop (:mod:`rnnlab.nn.kernels`), CUDA graphs (:mod:`rnnlab.nn.graphs`) and oneDNN's packed product
(:mod:`rnnlab.nn.onednn`). This module alone chooses among them; the callers describe the situation and follow
the answer:

* :class:`Machine`: device, dtype, whether the C++ kernels are built (and not switched off in this thread),
  whether oneDNN's packed product passed its guard and is on, torch's threads, and whether
  :mod:`rnnlab.allocator` keeps large blocks in this process;
* :class:`Network`: the cell class (read through what it says of itself: ``has_sequence``,
  ``kernel_sequence_max_hidden``, ``kernel_code``, ``packs``, ``gates``), width, layers, streams.

Each chooser returns a :class:`Choice`, the path and why: :func:`training` (the stack's fused path),
:func:`recurrence_loop` (C++ or Python inside a hand-written recurrence), :func:`decision` (the C++ decision loop
or the packed step), :func:`stepping` (the packed step, as a CUDA graph or eagerly), :func:`sampling` (for
:func:`rnnlab.sampling.generate`), :func:`linear` (:class:`~rnnlab.nn.linear.PackedLinear`'s product). The first
time a choice is made in a process it is logged at DEBUG on the ``rnnlab.nn.paths`` logger; :func:`explain`
gives them all for one description (``rnnlab paths --cell lstm --hidden-size 512`` prints it).

The LSTM's C++ training loop (:class:`~rnnlab.nn.sequence.LSTMSequence`) runs for layers of at most 128 units
(``LSTMCell.kernel_sequence_max_hidden``) where it measured faster than oneDNN's LSTM: in a process whose allocator
maps large blocks afresh (a user's own loop; oneDNN's LSTM then pays page faults on its workspaces every step), and
on one thread (``torchrun`` gives each rank one by default). With :mod:`rnnlab.allocator`'s setting, as every rnnlab
command has it, on two or more threads, oneDNN's LSTM runs: it was measured 1.03-1.11x faster there at 32-128
units on a quiet machine (``benchmarks/bench_speed.py``). Measured again side by side in one process, alternating the two paths
6-10 times (median; a 2-layer LSTM's forward and backward at batch 64 x 100 steps; 2 Zen 3 cores shared with
other work, load 6-9), oneDNN's time over the kernel's, one value per round:

======================================  ================  ================  ================  ======
                                        2x32              2x64              2x128             2x256
======================================  ================  ================  ================  ======
1 thread, large blocks kept             1.38, 1.42, 1.00  1.26, 1.08        0.99, 1.08, 1.02  1.00
2 threads, large blocks kept            1.24, 1.37,       1.09, 1.13,       1.13, 2.06,
                                        0.70, 0.74        1.19, 0.81        0.91, 1.61
1 thread, malloc as glibc has it        1.57                                1.29              1.19
2 threads, malloc as glibc has it       0.94              1.33              1.53
======================================  ================  ================  ================  ======

On one thread the kernel was never more than 1% slower; on two, under that load, neither was reliably faster, so
the quieter measurement decides there. Above 128 units oneDNN's LSTM keeps its lead measured at
2x512.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, NamedTuple

import torch

from rnnlab.allocator import large_blocks_kept
from rnnlab.nn import kernels, onednn

log = logging.getLogger(__name__)

KERNEL_DTYPES = (torch.float32, torch.float64)  # what the C++ loops compute in
GRAPH_FROM = 32  # steps from which a one-off GPU run records its step as a CUDA graph (a capture costs a few steps)
WHOLE_FROM = 16  # rows from which the addmm product keeps its matrix whole (fewer: two column halves, two cores)
ONEDNN_MIN_ROWS = 4  # by default oneDNN's packed product takes matrices multiplied for this many rows...
ONEDNN_MIN_SIZE = 1 << 19  # ...and of this many entries (512 x 1024): see rnnlab.nn.linear's table


class Choice(NamedTuple):
    """A path and why it was chosen."""

    path: str
    reason: str


class Machine(NamedTuple):
    """What the choice depends on in the process and the device."""

    device: str  # torch.device.type: "cpu", "cuda", ...
    dtype: torch.dtype
    kernels: bool  # rnnlab's C++ loops built, loaded and not switched off (nn.kernels.available(); CPU only)
    # oneDNN's packed product usable for this device and dtype: float32 on the CPU, torch.backends.mkldnn on, and
    # the private operators through their guard (nn.onednn.usable())
    onednn: bool
    # torch.get_num_threads(): described, but no choice here depends on it (the C++ loops split their work by
    # rows or units for the threads they get, inside the kernel)
    threads: int = 1
    large_blocks: bool = False  # rnnlab.allocator keeps freed large blocks in this process

    @classmethod
    def of(cls, device: torch.device | str, dtype: torch.dtype) -> Machine:
        """This process on ``device`` (the C++ kernels are built on first asking, for a CPU only)."""
        kind = device if isinstance(device, str) and ":" not in device else torch.device(device).type
        cpu = kind == "cpu"
        return cls(kind, dtype, cpu and kernels.available(),
                   cpu and dtype == torch.float32 and torch.backends.mkldnn.enabled and onednn.usable(),
                   torch.get_num_threads(), large_blocks_kept())

    @classmethod
    def of_tensor(cls, t: torch.Tensor) -> Machine:
        return cls.of(t.device.type, t.dtype)


class Network(NamedTuple):
    """What the choice depends on in the model."""

    cell: type  # the Cell subclass (rnnlab.nn.cells): read through its class attributes only
    hidden_size: int
    num_layers: int = 1
    streams: int = 1  # rows stepped at once (sampling, serving, deciding a batch's inputs)

    @classmethod
    def of(cls, stack: Any, streams: int = 1) -> Network:
        """A :class:`~rnnlab.nn.stack.RecurrentStack` (a language model's ``rnn``)."""
        return cls(stack.cell_type, stack.hidden_size, stack.num_layers, streams)


_said: set[tuple[str, str, str]] = set()
_said_lock = threading.Lock()


def _tell(what: str, choice: Choice) -> Choice:
    """Log a choice at DEBUG the first time this process makes it."""
    if not log.isEnabledFor(logging.DEBUG):
        return choice
    key = (what, *choice)
    if key not in _said:
        with _said_lock:
            if key in _said:
                return choice
            _said.add(key)
        log.debug("%s: %s (%s)", what, choice.path, choice.reason)
    return choice


def _name(cell: type) -> str:
    return cell.__name__


def recurrence_loop(machine: Machine) -> Choice:
    """Inside a hand-written recurrence (:mod:`rnnlab.nn.sequence`): ``"kernel"`` (the C++ loop) or ``"python"``."""
    return _tell("recurrence loop", _recurrence_loop(machine))


@functools.lru_cache(maxsize=256)  # asked by every layer's forward and backward
def _recurrence_loop(machine: Machine) -> Choice:
    if machine.device != "cpu":
        c = Choice("python", f"the C++ loops run on the CPU, this is {machine.device}")
    elif machine.dtype not in KERNEL_DTYPES:
        c = Choice("python", f"the C++ loops compute in float32 and float64, not {machine.dtype}")
    elif not machine.kernels:
        c = Choice("python", f"the C++ kernels are not built here ({kernels.why_not() or 'switched off'})")
    else:
        c = Choice("kernel", "the C++ kernels are built: one product and one vectorized pass per step")
    return c


def training(machine: Machine, net: Network, steps: int = 1) -> Choice:
    """The stack's fused path for a sequence of ``steps`` steps: ``"sequences"`` (each layer's hand-written
    recurrence, :meth:`~rnnlab.nn.stack.RecurrentStack.sequences`), ``"torch-fused"`` (``torch.nn.RNN/LSTM/GRU``,
    :meth:`~rnnlab.nn.stack.RecurrentStack.torch_fused`) or, for a cell with neither (no ``fused_cls``),
    ``"unroll"`` (the reference unroller, :meth:`~rnnlab.nn.stack.RecurrentStack.unroll`)."""
    return _tell("training", _training(machine, net, steps == 0))


@functools.lru_cache(maxsize=256)  # asked at every training step: a choice is made once per description
def _training(machine: Machine, net: Network, empty: bool) -> Choice:
    c = _training_fast(machine, net, empty)
    if c.path == "torch-fused" and net.cell.fused_cls is None:
        c = Choice("unroll", f"{c.reason}; {_name(net.cell)} has no fused torch module: the reference unroller")
    return c


def _training_fast(machine: Machine, net: Network, empty: bool) -> Choice:
    cell, limit = net.cell, net.cell.kernel_sequence_max_hidden
    if machine.device != "cpu":
        c = Choice("torch-fused", f"torch's fused module on {machine.device} (cuDNN on a GPU)")
    elif empty:
        c = Choice("torch-fused", "an empty sequence")
    elif cell.has_sequence:
        c = Choice("sequences", f"{_name(cell)} has a hand-written recurrence (the weight gradient one product over "
                                f"all steps), faster than torch's module on the CPU; its loop: "
                                f"{_recurrence_loop(machine).path}")
    elif limit is None:
        c = Choice("torch-fused", f"{_name(cell)} has no hand-written recurrence")
    elif _recurrence_loop(machine).path != "kernel":
        c = Choice("torch-fused", f"{_name(cell)}'s hand-written recurrence is C++ only: "
                                  f"{_recurrence_loop(machine).reason}")
    elif net.hidden_size > limit:
        c = Choice("torch-fused", f"{net.hidden_size} units: above {limit} torch's fused module (oneDNN) measured "
                                  f"faster than {_name(cell)}'s C++ loop")
    elif machine.large_blocks and machine.threads > 1:
        c = Choice("torch-fused", f"large blocks kept (rnnlab.allocator) and {machine.threads} threads: torch's fused "
                                  f"module (oneDNN) measured as fast as {_name(cell)}'s C++ loop or faster")
    else:
        where = "malloc maps large blocks afresh" if not machine.large_blocks else "one thread"
        c = Choice("sequences", f"{net.hidden_size} units, {where}: up to {limit} {_name(cell)}'s C++ loop measured "
                                f"faster than torch's fused module (oneDNN)")
    return c


def decision(machine: Machine, net: Network) -> Choice:
    """A self-fed run's inputs and :func:`rnnlab.sampling.generate`'s plain draws: ``"kernel"`` (the C++ decision
    loop, :class:`~rnnlab.nn.models.Decider`) or ``"stepper"`` (the packed step, :class:`~rnnlab.nn.models.Stepper`,
    from Python)."""
    if net.cell.kernel_code is None:
        c = Choice("stepper", f"{_name(net.cell)} has no code in the C++ decision loop")
    elif _recurrence_loop(machine).path != "kernel":
        c = Choice("stepper", _recurrence_loop(machine).reason)
    else:
        c = Choice("kernel", "the C++ decision loop: no Python between steps")
    return _tell("decision", c)


def stepping(machine: Machine, steps: int = GRAPH_FROM, kept: bool = False) -> Choice:
    """The packed step for ``steps`` steps: ``"graph"`` (replayed as a CUDA graph,
    :class:`~rnnlab.nn.graphs.GraphedStep`) or ``"eager"``. ``kept``: the step is kept across calls (a training
    strategy's), so one capture serves many runs."""
    if machine.device != "cuda":
        c = Choice("eager", f"CUDA graphs are for a GPU, this is {machine.device}")
    elif kept:
        c = Choice("graph", "one launch a step instead of dozens; the graph is kept across batches")
    elif steps < GRAPH_FROM:
        c = Choice("eager", f"{steps} steps: a capture costs a few; graphs from {GRAPH_FROM}")
    else:
        c = Choice("graph", f"{steps} steps: one launch a step instead of dozens")
    return _tell("stepping", c)


SAMPLERS = ("argmax", "sample", "filtered", "beam")  # sample: softmax draws at any temperature; filtered: top-k/p
_SAMPLER_NAMES = {"argmax": "argmax", "sample": "plain sampling", "filtered": "top-k or top-p", "beam": "beam search"}


def sampling(machine: Machine, net: Network, sampler: str, steps: int) -> Choice:
    """:func:`rnnlab.sampling.generate`'s path for ``steps`` steps with ``sampler`` (one of :data:`SAMPLERS`):
    ``"kernel"`` (the C++ decision loop, which draws argmax and plain samples), else :func:`stepping`'s."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    d = decision(machine, net)
    if sampler in ("argmax", "sample") and d.path == "kernel":
        c = Choice("kernel", f"{sampler}: {d.reason}")
    else:
        why = d.reason if sampler in ("argmax", "sample") else \
            f"the C++ decision loop draws argmax and plain samples only, not {_SAMPLER_NAMES[sampler]}"
        s = stepping(machine, steps)
        c = Choice(s.path, f"{why}; {s.reason}")
    return _tell("sampling", c)


def linear(machine: Machine, rows: int, numel: int, onednn: bool | None = None) -> Choice:
    """:class:`~rnnlab.nn.linear.PackedLinear`'s product for a matrix of ``numel`` entries and about ``rows`` rows
    (``machine.dtype``: the matrix's): ``"onednn"`` (oneDNN's packed product), ``"addmm-halves"`` (two column
    halves in one batched product: both cores for a few rows) or ``"addmm"``. ``onednn``: True takes oneDNN
    wherever it is usable, False never, None where it was measured faster."""
    want = onednn if onednn is not None else rows >= ONEDNN_MIN_ROWS and numel >= ONEDNN_MIN_SIZE
    if want and machine.device == "cpu" and machine.dtype == torch.float32 and machine.onednn:
        c = Choice("onednn", "asked for" if onednn else f"{rows} rows of a {numel}-entry matrix: at least "
                   f"{ONEDNN_MIN_ROWS} rows and {ONEDNN_MIN_SIZE} entries, where oneDNN's packed product measured faster")
    else:
        if not want:
            why = "not asked for" if onednn is False else f"{rows} rows of a {numel}-entry matrix: addmm measured " \
                f"faster below {ONEDNN_MIN_ROWS} rows or {ONEDNN_MIN_SIZE} entries"
        elif machine.device != "cpu" or machine.dtype != torch.float32:
            why = f"oneDNN's packed product is for float32 on the CPU, not {machine.dtype} on {machine.device}"
        else:
            why = f"oneDNN's packed product is unusable here ({onednn_why_not()})"
        if rows < WHOLE_FROM and machine.device == "cpu":
            c = Choice("addmm-halves", f"{why}; under {WHOLE_FROM} rows two column halves run on two cores")
        else:
            c = Choice("addmm", why)
    return _tell("linear", c)


def onednn_why_not() -> str:
    """Why oneDNN's packed product is not used (its guard's verdict, or the switch)."""
    return onednn.why_not() or ("torch.backends.mkldnn is switched off" if not torch.backends.mkldnn.enabled
                                else "usable")


def explain(machine: Machine, net: Network, steps: int = GRAPH_FROM) -> dict[str, Choice]:
    """Every choice for one description, by what it serves (``rnnlab paths`` prints these)."""
    cell, g = net.cell, net.cell.gates * net.hidden_size
    out = {"training (fused path)": training(machine, net)}
    if machine.device == "cpu" and (cell.has_sequence or cell.kernel_sequence_max_hidden is not None):
        out["recurrence loop"] = recurrence_loop(machine)
    out["free running, self-fed inputs"] = decision(machine, net)
    for sampler in ("sample", "filtered"):
        out[f"generate ({'argmax, plain sampling' if sampler == 'sample' else 'top-k, top-p, beam'})"] = \
            sampling(machine, net, sampler, steps)
    if cell.packs:
        out["stepper: first layer W_hh"] = linear(machine, net.streams, g * net.hidden_size)
        if net.num_layers > 1:
            out["stepper: later layers [W_ih, W_hh]"] = linear(machine, net.streams, g * 2 * net.hidden_size)
    return out

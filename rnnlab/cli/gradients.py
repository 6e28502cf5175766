"""Gradients through time and what they do: ``gradients``, ``connectivity`` and ``exposure``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from rnnlab.cli.common import add_command, device_option, load_lm, option, run_corpus
from rnnlab.errors import ConfigError

GRADIENTS_EXAMPLES = """examples:
  rnnlab gradients --length 100 --plot grads.png                # elman, lstm, gru at initialisation
  rnnlab gradients --cells elman --gain 3 --plot explode.png    # a large recurrent weight: exploding
  rnnlab gradients --checkpoint runs/x --length 200 --plot trained.png --json-out trained.json
"""
CONNECTIVITY_EXAMPLES = """examples:
  rnnlab connectivity runs/x --text "for i in range(10): print(i)" --plot connectivity.png
  rnnlab connectivity runs/x --text-file snippet.py --top 5 --json-out connectivity.json
"""
EXPOSURE_EXAMPLES = """examples:
  rnnlab exposure runs/x --plot exposure.png                  # 20 prefixes of 100, 200 sampled characters
  rnnlab exposure runs/x --prefixes 50 --length 400 --temperature 0.8 --json-out exposure.json
"""
_RUN = "a run folder or a .safetensors checkpoint"


@dataclass(kw_only=True)
class GradientsOptions:
    """``rnnlab gradients``: which models (fresh cells or trained checkpoints), how long, which loss."""

    cells: list[str] = option(default_factory=lambda: ["elman", "lstm", "gru"], help="fresh models",
                              nargs="*", default_shown="all three")
    checkpoint: list[str] | None = option(None, "trained language models (their validation text)", nargs="*",
                                          default_shown=None)
    length: int = option(100, "T, steps")
    hidden_size: int = option(64, "fresh models' width")
    num_layers: int = option(1, "fresh models' depth")
    batch_size: int = option(8, "sequences averaged")
    gain: float = option(1.0, "multiply fresh recurrent weights by this", default_shown="1")
    loss: Literal["last", "all"] = option("last", "loss at the last step, or summed", default_shown=None)
    clip_norm: float = option(0.0, "fresh models: the clipping threshold of the gradient's global norm; the JSON's "
                                   "clipped_norms are the curves scaled by the factor clipping applies",
                              default_shown="0, off")
    seed: int = option(0, "seed")
    plot: str | None = option(None, "write the curves to this PNG (log scale)", default_shown=None)
    json_out: str | None = option(None, "write the curves and spectra to this JSON file", default_shown=None)


@dataclass(kw_only=True)
class ConnectivityOptions:
    """``rnnlab connectivity``: a model, a text, and what is shown of the matrix."""

    checkpoint: str = option(help=_RUN, positional=True)
    text: str | None = option(None, "the text read", default_shown=None)
    text_file: str | None = option(None, "read the text from this file", default_shown=None)
    top: int = option(3, "earlier positions listed per prediction")
    plot: str | None = option(None, "write the matrix to this PNG (each row divided by its largest)",
                              default_shown=None)
    json_out: str | None = option(None, "write the matrix (its rows up to each position) to this JSON",
                                  default_shown=None)
    device: str = device_option()


@dataclass(kw_only=True)
class ExposureOptions:
    """``rnnlab exposure``: prefixes of the validation text, continued with the model's own samples."""

    checkpoint: str = option(help=_RUN, positional=True)
    prefixes: int = option(20, "K, prefixes of the validation text")
    prefix_len: int = option(100, "tokens of each prefix")
    length: int = option(200, "L, tokens generated after each")
    buckets: int = option(10, "bands of the distance axis")
    ref_order: int = option(5, "the reference n-gram model's order")
    stat_order: int = option(2, "n of the compared n-gram statistics")
    temperature: float = option(1.0, "sampling temperature", default_shown="1")
    seed: int = option(0)
    plot: str | None = option(None, "write both curves to this PNG", default_shown=None)
    json_out: str | None = option(None, "write the report to this JSON file", default_shown=None)
    device: str = device_option()


def cmd_gradients(o: GradientsOptions) -> int:
    import torch

    from rnnlab import jsonio
    from rnnlab.checkpoint import load_model
    from rnnlab.data.corpus import load_corpus
    from rnnlab.gradients import gradient_norms_per_step, gradient_report, plot_gradient_norms, recurrent_spectra

    bad = [f"{name} must be >= 1, got {getattr(o, name)}" for name in ("length", "batch_size")
           if getattr(o, name) < 1]  # checked here too: --checkpoint alone never reaches gradient_report
    if bad:
        raise ConfigError(bad)
    report = gradient_report(cells=o.cells, hidden_size=o.hidden_size, length=o.length, seed=o.seed,
                             batch_size=o.batch_size, num_layers=o.num_layers, loss=o.loss,
                             recurrent_gain=o.gain, clip_norm=o.clip_norm) if o.cells else None
    for path in o.checkpoint or []:
        model, vocab, ckpt = load_model(path)
        ids = vocab.encode(load_corpus(ckpt.config.data).val)
        need = o.batch_size * (o.length + 1)
        if len(ids) < need:
            raise ConfigError(f"{path}: the validation split has {len(ids)} tokens; --batch-size x (--length + 1) "
                              f"= {need} needed")
        rows = torch.from_numpy(ids[:need].reshape(o.batch_size, o.length + 1))  # (B, T+1)
        norms = gradient_norms_per_step(model.double(), rows[:, :-1], loss=o.loss, targets=rows[:, 1:])
        name = f"{ckpt.config.model.cell} {path} (step {ckpt.train_state.get('step', '?')})"  # the path as given
        entry = {"norms": [float(v) for v in norms], "spectra": recurrent_spectra(model),
                 "first_over_last": float(norms[0] / norms[-1]) if norms[-1] > 0 else float("nan")}
        if report is None:
            report = {"config": {"length": o.length, "loss": o.loss, "batch_size": o.batch_size},
                      "steps": list(range(1, o.length + 1)), "cells": {}}
        unique, k = name, 1
        while unique in report["cells"]:  # the same checkpoint twice: a curve each, never one over the other
            k += 1
            unique = f"{name} #{k}"
        report["cells"][unique] = entry
    if report is None:
        raise ConfigError("nothing to measure: give --cells or --checkpoint")
    for name, entry in report["cells"].items():
        clipped = (f"; gradient norm {entry['grad_norm']:.3g}, clipped by x{entry['clip_factor']:.3g}"
                   if o.clip_norm > 0 and "clip_factor" in entry else "")
        print(f"{name:>28}: |dL/dh_1| / |dL/dh_T| = {entry['first_over_last']:.3g}{clipped}")
    if o.plot:
        plot_gradient_norms(report, o.plot)
        print(f"plot written to {o.plot}")
    if o.json_out:
        from rnnlab.checkpoint import atomic_write

        atomic_write(o.json_out, (jsonio.dumps(report) + "\n").encode("utf-8"))
        print(f"curves written to {o.json_out}")
    return 0


def cmd_connectivity(o: ConnectivityOptions) -> int:
    from rnnlab import jsonio
    from rnnlab.checkpoint import atomic_write
    from rnnlab.data.corpus import read_text
    from rnnlab.gradients import connectivity, plot_connectivity, strongest_inputs
    from rnnlab.plots import check_writable

    if (o.text is None) == (o.text_file is None):
        raise ConfigError("give the text with --text TEXT or --text-file FILE (one of them)")
    if o.top < 1:
        raise ConfigError(f"--top must be >= 1, got {o.top}")
    if o.plot:
        check_writable(o.plot)
    text = o.text if o.text is not None else read_text(o.text_file)
    model, vocab, ckpt = load_lm(o.checkpoint, o.device)
    ids = vocab.encode(text)
    if len(ids) < 2:
        raise ConfigError(f"the text holds {len(ids)} {vocab.level}(s); at least 2 are needed")
    c = connectivity(model, ids)  # (N-1, N-1)
    tokens = [vocab.symbols[int(i)] for i in ids]
    for t, row in enumerate(strongest_inputs(c, o.top)):
        shares = ", ".join(f"{s} {tokens[s]!r} {share:.2f}" for s, share in row)
        print(f"{t:>5} {tokens[t]!r:>8} -> {tokens[t + 1]!r:<8} strongest: {shares}")
    if o.plot:
        plot_connectivity(c, tokens, o.plot, title=f"connectivity: {ckpt.path.parent.name}")
        print(f"plot written to {o.plot}")
    if o.json_out:
        out = {"tokens": tokens, "rows": [[float(v) for v in c[t, :t + 1]] for t in range(len(c))]}
        atomic_write(o.json_out, (jsonio.dumps(out) + "\n").encode("utf-8"))
        print(f"connectivity written to {o.json_out}")
    return 0


def cmd_exposure(o: ExposureOptions) -> int:
    from rnnlab import jsonio
    from rnnlab.checkpoint import atomic_write
    from rnnlab.exposure import exposure_bias, plot_exposure

    model, vocab, ckpt = load_lm(o.checkpoint, o.device)
    corpus = run_corpus(ckpt, "measuring exposure bias against it")
    r = exposure_bias(model, vocab, corpus.val, corpus.train, prefixes=o.prefixes, prefix_len=o.prefix_len,
                      length=o.length, buckets=o.buckets, ref_order=o.ref_order, stat_order=o.stat_order,
                      temperature=o.temperature, seed=o.seed)
    print(f"{'distance':>9} {'teacher bits':>13} {'ref: real':>10} {'ref: generated':>15} {'JS gen/real':>12} "
          f"{'JS floor':>9}")
    for i, d in enumerate(r["distance"]):
        print(f"{d:9.1f} {r['teacher_bits'][i]:13.3f} {r['real_ref_bits'][i]:10.3f} {r['generated_ref_bits'][i]:15.3f} "
              f"{r['divergence'][i]:12.4f} {r['real_divergence'][i]:9.4f}")
    s = r["summary"]
    print(f"mean: the reference model finds generated text {s['ref_gap_bits']:+.3f} bits per token less likely than "
          f"real text; n-gram divergence {s['divergence']:.4f} (floor {s['real_divergence']:.4f})")
    if o.plot:
        plot_exposure(r, o.plot, title=f"exposure bias: {ckpt.path.parent.name}")
        print(f"plot written to {o.plot}")
    if o.json_out:
        atomic_write(o.json_out, (jsonio.dumps(r) + "\n").encode("utf-8"))
        print(f"report written to {o.json_out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "gradients", GradientsOptions, cmd_gradients,
                help="gradient norm per time step: vanishing and exploding", epilog=GRADIENTS_EXAMPLES,
                description="The norm of dL/dh_t for every step t, for fresh models of each cell or for trained "
                            "checkpoints, with the recurrent weights' spectra.")
    add_command(sub, "connectivity", ConnectivityOptions, cmd_connectivity,
                help="how strongly each prediction depends on each earlier character", epilog=CONNECTIVITY_EXAMPLES,
                description="For a text, the gradient magnitude of the log probability of each next character with "
                            "respect to every earlier input: per position, the earlier characters the prediction "
                            "depends on most.")
    add_command(sub, "exposure", ExposureOptions, cmd_exposure,
                help="exposure bias: how far the model drifts on its own samples", epilog=EXPOSURE_EXAMPLES,
                description="From prefixes of the validation text, continue with the model's own samples and "
                            "measure the drift against the distance from the prefix.")


__all__ = ["ConnectivityOptions", "ExposureOptions", "GradientsOptions", "register"]

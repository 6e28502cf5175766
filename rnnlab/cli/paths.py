"""``rnnlab paths``: which fast path each part of rnnlab takes on this machine, and why (:mod:`rnnlab.nn.paths`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from rnnlab.cli.common import add_command, option, section
from rnnlab.config import ModelConfig
from rnnlab.errors import ConfigError

PATHS_EXAMPLES = "example:\n  rnnlab paths --cell lstm --hidden-size 512 --streams 64\n"


@dataclass(kw_only=True)
class PathsOptions:
    """``rnnlab paths``: the network described (its cell and sizes) and the machine's device and dtype."""

    model: ModelConfig = section(ModelConfig, "model options", skip=("dropout", "input", "embedding_size", "fused", "tie_weights"))
    streams: int = option(1, "rows stepped at once when sampling")
    device: Literal["cpu", "cuda"] = option("cpu", "the device described")
    dtype: Literal["float32", "float64"] = option("float32")


def cmd_paths(o: PathsOptions) -> int:
    import torch

    from rnnlab.nn import paths
    from rnnlab.nn.cells import CELL_TYPES

    model = o.model
    problems = model.problems() + ([] if o.streams >= 1 else [f"streams must be >= 1, got {o.streams}"])
    if problems:
        raise ConfigError(problems)
    from rnnlab.allocator import keep_large_blocks

    keep_large_blocks()  # as every training command sets it, so that the choices are theirs
    machine = paths.Machine.of(o.device, getattr(torch, o.dtype))
    print(f"machine: {machine.device}, {o.dtype}, kernels {'built' if machine.kernels else 'not used'}, oneDNN's "
          f"packed product {'usable' if machine.onednn else 'unusable'}, {machine.threads} threads, large blocks "
          f"{'kept' if machine.large_blocks else 'as malloc has them'}")
    net = paths.Network(CELL_TYPES[model.cell], model.hidden_size, model.num_layers, o.streams)
    for what, choice in paths.explain(machine, net).items():
        print(f"{what}: {choice.path} ({choice.reason})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "paths", PathsOptions, cmd_paths, help="which fast path each part of rnnlab takes here, and why",
                epilog=PATHS_EXAMPLES)


__all__ = ["PathsOptions", "register"]

"""Every command's options come from one typed dataclass: the parser is generated from it, and parsing
gives an instance of it (its defaults where nothing is given)."""

import argparse
import dataclasses
import subprocess
import sys

import pytest

from rnnlab.cli import build_parser
from rnnlab.cli.classify import ClassifyEvalOptions, ClassifyPredictOptions, ClassifyTrainOptions
from rnnlab.cli.common import flag, from_args, option_fields
from rnnlab.cli.data import DataListOptions, DownloadOptions
from rnnlab.cli.gradients import ConnectivityOptions, ExposureOptions, GradientsOptions
from rnnlab.cli.ngram import (
    NGramEvalOptions,
    NGramFitOptions,
    NGramProbOptions,
    NGramSampleOptions,
    NGramStatsOptions,
)
from rnnlab.cli.paths import PathsOptions
from rnnlab.cli.scratch import ScratchTrainOptions
from rnnlab.cli.serve import ServeOptions
from rnnlab.cli.tasks import TasksRunOptions
from rnnlab.cli.train import DemoOptions, EvalOptions, SampleOptions, TrainOptions
from rnnlab.config import (
    ClassifyRunConfig,
    DataConfig,
    ModelConfig,
    NGramConfig,
    RunConfig,
    SampleConfig,
    TaskRunConfig,
)


def _commands(parser, path=()):
    """Every parser that runs a command (not a group of actions), by the words after ``rnnlab``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if "func" in sub._defaults:
                    yield (*path, name), sub
                yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(build_parser()))


def test_every_command_has_an_options_dataclass():
    assert {"train", "sample", "ngram fit", "classify predict", "serve", "data list"} <= {" ".join(p) for p in COMMANDS}
    for path, parser in COMMANDS.items():
        options = parser._defaults["options"]
        assert dataclasses.is_dataclass(options), path


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_every_option_is_a_field_of_the_commands_options(path):
    """Each argument but --help is one field of the command's dataclass (or of a section of it), named
    as the field is, and each field is an argument: no option is written by hand beside the configs."""
    parser = COMMANDS[path]
    fields = dict(option_fields(parser._defaults["options"]))
    seen = set()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.dest in fields, f"rnnlab {' '.join(path)}: {action.option_strings or action.dest} is no field"
        if action.option_strings:  # --name, and --no-name for a switch that is on by default
            assert action.option_strings[0] == flag(action.dest) and len(action.option_strings) <= 2
            assert action.help, f"rnnlab {' '.join(path)}: {action.option_strings[0]} has no help"
        seen.add(action.dest)
    assert seen == set(fields), f"fields without an argument: {set(fields) - seen}"


def _parse(argv):
    ns = build_parser().parse_args(argv)
    return from_args(ns, ns.options)


# argv with nothing optional given, its options; argv with options given, its options
CASES = {
    "train": (["train"], TrainOptions(),
              ["train", "--data", "t.txt", "--hidden-size", "16", "--lr", "0.01", "--no-fused", "--json"],
              TrainOptions(run=RunConfig(data=DataConfig(data="t.txt"), model=ModelConfig(hidden_size=16, fused=False),
                                         optim=dataclasses.replace(RunConfig().optim, lr=0.01)), json=True)),
    "sample": (["sample", "r"], SampleOptions(checkpoint="r"),
               ["sample", "r", "--top-k", "3", "--temperature", "0.5", "--device", "auto"],
               SampleOptions(checkpoint="r", sampling=SampleConfig(top_k=3, temperature=0.5), device="auto")),
    "eval": (["eval", "r"], EvalOptions(checkpoint="r"), ["eval", "r", "--split", "test", "--json"],
             EvalOptions(checkpoint="r", split="test", json=True)),
    "demo": (["demo"], DemoOptions(), ["demo", "--time-budget", "5", "--seed", "3", "--quiet"],
             DemoOptions(time_budget=5.0, seed=3, quiet=True)),
    "ngram fit": (["ngram", "fit", "--out", "m.npz"], NGramFitOptions(out="m.npz"),
                  ["ngram", "fit", "--data", "t.txt", "--order", "3", "--sentences", "--out", "m.npz"],
                  NGramFitOptions(data=DataConfig(data="t.txt"), model=NGramConfig(order=3, sentences=True),
                                  out="m.npz")),
    "ngram eval": (["ngram", "eval", "m"], NGramEvalOptions(model="m"), ["ngram", "eval", "m", "--data", "x.txt"],
                   NGramEvalOptions(model="m", data="x.txt")),
    "ngram sample": (["ngram", "sample", "m"], NGramSampleOptions(model="m"),
                     ["ngram", "sample", "m", "--strategy", "beam", "--beam-width", "2"],
                     NGramSampleOptions(model="m", sampling=SampleConfig(strategy="beam", beam_width=2))),
    "ngram prob": (["ngram", "prob", "m", "the cat"], NGramProbOptions(model="m", text="the cat"),
                   ["ngram", "prob", "m", "a", "--json"], NGramProbOptions(model="m", text="a", json=True)),
    "ngram stats": (["ngram", "stats"], NGramStatsOptions(),
                    ["ngram", "stats", "--level", "word", "--max-order", "3"],
                    NGramStatsOptions(data=DataConfig(level="word"), max_order=3)),
    "classify train": (["classify", "train"], ClassifyTrainOptions(),
                       ["classify", "train", "--builtin", "digits", "--balance", "none", "--batch-size", "7"],
                       ClassifyTrainOptions(run=dataclasses.replace(
                           ClassifyRunConfig(), data=dataclasses.replace(ClassifyRunConfig().data, builtin="digits"),
                           classifier=dataclasses.replace(ClassifyRunConfig().classifier, balance="none"),
                           train=dataclasses.replace(ClassifyRunConfig().train, batch_size=7)))),
    "classify eval": (["classify", "eval", "r"], ClassifyEvalOptions(checkpoint="r"),
                      ["classify", "eval", "r", "--split", "val", "--plot", "c.png"],
                      ClassifyEvalOptions(checkpoint="r", split="val", plot="c.png")),
    "classify predict": (["classify", "predict", "r", "a", "b"], ClassifyPredictOptions(checkpoint="r", inputs=["a", "b"]),
                         ["classify", "predict", "r", "a", "--top-k", "1"],
                         ClassifyPredictOptions(checkpoint="r", inputs=["a"], top_k=1)),
    "gradients": (["gradients"], GradientsOptions(),
                  ["gradients", "--cells", "elman", "--checkpoint", "a", "b", "--gain", "3", "--loss", "all"],
                  GradientsOptions(cells=["elman"], checkpoint=["a", "b"], gain=3.0, loss="all")),
    "connectivity": (["connectivity", "r"], ConnectivityOptions(checkpoint="r"),
                     ["connectivity", "r", "--text", "ab", "--top", "5"],
                     ConnectivityOptions(checkpoint="r", text="ab", top=5)),
    "exposure": (["exposure", "r"], ExposureOptions(checkpoint="r"),
                 ["exposure", "r", "--prefixes", "4", "--temperature", "0.8"],
                 ExposureOptions(checkpoint="r", prefixes=4, temperature=0.8)),
    "tasks run": (["tasks", "run", "adding"],
                  TasksRunOptions(task="adding", run=dataclasses.replace(
                      TaskRunConfig(), task=dataclasses.replace(TaskRunConfig().task, name="adding"))),
                  ["tasks", "run", "copy", "--cell", "gru", "--length", "50"],
                  TasksRunOptions(task="copy", run=dataclasses.replace(
                      TaskRunConfig(), task=dataclasses.replace(TaskRunConfig().task, name="copy", length=50),
                      model=dataclasses.replace(TaskRunConfig().model, cell="gru")))),
    "scratch train": (["scratch", "train", "t.txt"], ScratchTrainOptions(file="t.txt"),
                      ["scratch", "train", "t.txt", "--optimizer", "sgd", "--clip-norm", "5"],
                      ScratchTrainOptions(file="t.txt", optimizer="sgd", clip_norm=5.0)),
    "paths": (["paths"], PathsOptions(), ["paths", "--cell", "gru", "--streams", "64", "--dtype", "float64"],
              PathsOptions(model=ModelConfig(cell="gru"), streams=64, dtype="float64")),
    "serve": (["serve"], ServeOptions(), ["serve", "a", "b", "--port", "8080", "--runs-max-mb", "50"],
              ServeOptions(checkpoints=["a", "b"], port=8080, runs_max_mb=50.0)),
    "data list": (["data", "list"], DataListOptions(), ["data", "list"], DataListOptions()),
    "data download": (["data", "download", "ptb"], DownloadOptions(name="ptb"),
                      ["data", "download", "ptb", "--dir", "d", "--quiet"],
                      DownloadOptions(name="ptb", dir="d", quiet=True)),
}


NO_TORCH = """
import contextlib, io, sys
from rnnlab.cli import build_parser

def run(argv):
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err, \\
            contextlib.suppress(SystemExit):
        build_parser().parse_args(argv)
    return out.getvalue() + err.getvalue()

build_parser()
print("build_parser", "torch" in sys.modules)
for argv in (["--help"], ["tasks", "--help"], ["ngram", "fit", "--help"], ["classify", "eval", "--help"],
             ["classify", "eval"], ["train", "--no-such-option"]):
    shown = run(argv)
    print(" ".join(argv), "usage:" in shown, "torch" in sys.modules)
shown = run(["train", "--help"])  # lists the registered cells: the registry, and torch, are imported now
print("train --help lists the cells", "tanh units" in shown and "torch" in sys.modules)
"""


def test_building_the_parser_and_help_that_lists_no_cells_import_no_torch():
    """The command modules import the library where a command runs, and the cells' registry (which imports
    torch) is read only where ``--cell`` is shown or checked: building every parser, ``rnnlab --help`` and the
    help and usage errors of commands without ``--cell`` do not wait for torch."""
    r = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "train --help lists the cells True"
    assert lines[:-1] == ["build_parser False", "--help True False", "tasks --help True False",
                          "ngram fit --help True False", "classify eval --help True False", "classify eval True False",
                          "train --no-such-option True False"]  # each shown its usage, none imported torch


def test_every_command_has_a_case():
    assert set(CASES) == {" ".join(p) for p in COMMANDS}


@pytest.mark.parametrize("name", list(CASES))
def test_parsing_gives_the_commands_typed_options(name):
    plain, defaults, argv, given = CASES[name]
    assert _parse(plain) == defaults
    assert _parse(argv) == given
    assert _parse(argv) != defaults or name == "data list"  # the given options changed something


def test_the_values_have_the_declared_types():
    o = _parse(["serve", "--runs-max-mb", "50", "--port", "80"])
    assert type(o.runs_max_mb) is float and type(o.port) is int
    o = _parse(["train", "--lr", "1", "--seed", "2"])
    assert type(o.run.optim.lr) is float and type(o.run.train.seed) is int


def test_a_section_is_applied_only_where_given():
    """A section's defaults stay out of the namespace (so --resume keeps the run's own); a command's own
    options have theirs in it, as argparse has them."""
    ns = build_parser().parse_args(["sample", "r", "--top-k", "2"])
    assert vars(ns).get("top_k") == 2 and "temperature" not in vars(ns) and ns.device == "cpu"

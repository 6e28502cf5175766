"""What every command shares: its options generated from one typed dataclass, and how it reports.

A command declares one options dataclass (``kw_only``), and :func:`add_command` makes its parser from it,
field by field, in field order (``hidden_size`` is ``--hidden-size``). A field is

* an option of the command itself (:func:`option`): its default is in the namespace, as argparse has it;
  ``positional``, ``nargs``, ``required``, ``flag`` (``--json``, no ``--no-json``) and ``metavar`` say how
  it is read, ``default_shown`` how its default is named in the help (``None``: not at all);
* a section (:func:`section`): a library config such as :class:`~rnnlab.config.SampleConfig`, its fields a
  group of options applied only where given, on top of the config's defaults;
* the sections of a run config (:func:`sections`, e.g. :class:`~rnnlab.config.RunConfig`): a group per
  section, the given options applied on top of the defaults or, with ``--resume``, of the run's own config.

:func:`from_args` turns the parsed namespace back into that dataclass; the command's function receives it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import MISSING, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from rnnlab import jsonio
from rnnlab.config import SampleConfig, from_dict
from rnnlab.errors import CheckpointError, ConfigError

FMT = argparse.RawDescriptionHelpFormatter
SEQUENCE_BATCH_HELP = {"batch_size": "sequences per batch"}  # the classifier's and the tasks' (not streams of text)
_AUTO = object()  # default_shown not given: "(default: <the field's default>)"


# declaring options ------------------------------------------------------------------------------

def option(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING, metavar: Any = None,
           default_shown: Any = _AUTO, **meta: Any) -> Any:
    """A command's own option: a dataclass field whose metadata says how argparse reads it.

    ``meta`` may hold ``positional``, ``nargs``, ``required`` and ``flag`` (a ``store_true`` switch).
    ``metavar`` None is argparse's (the option's name in capitals)."""
    md = {"help": help, "metavar": metavar, **meta}
    if default_shown is not _AUTO:
        md["default_shown"] = default_shown
    return field(default=default, default_factory=default_factory, metadata=md)


def json_option() -> Any:
    return option(False, "print a JSON summary as the last line", flag=True, default_shown=None)


def quiet_option() -> Any:
    return option(False, "no progress bar", flag=True, default_shown=None)


def device_option() -> Any:
    return option("cpu", "cpu, cuda, cuda:N or auto (a GPU if there is one)", default_shown=None)


def checkpoint_option() -> Any:
    return option(help="a run folder (its best checkpoint) or a .safetensors checkpoint", positional=True)


def section(cls: type, title: str, *, skip: tuple[str, ...] = (), build: Callable[..., Any] | None = None) -> Any:
    """A library config whose fields are a group of options (``title``), each applied only where given;
    ``build(ns)`` makes it where more than an overlay on the defaults is needed (checks, warnings)."""
    return field(default_factory=cls, metadata={"section": title, "skip": skip, "build": build})


def sections(cls: type, build: Callable[[argparse.Namespace], Any], *, skip: tuple[str, ...] = (),
             helps: dict[str, str] | None = None) -> Any:
    """A run config of sections (``data``, ``model``, ...): a group of options per section; ``build(ns)``
    makes the config (the defaults or, with ``--resume``, the run's own, with the options given);
    ``helps`` replaces the help of fields that mean something else to this command."""
    return field(default_factory=cls, metadata={"sections": True, "skip": skip, "helps": helps or {}, "build": build})


# the parser from a dataclass --------------------------------------------------------------------

def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(tp: Any) -> Any:
    """The type of one value: ``int | None`` is read as an int, ``list[str]`` (with ``nargs``) as strings."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    return get_args(tp)[0] if get_origin(tp) is list else tp


def _help(f: dataclasses.Field, text: str, default: Any) -> str:
    shown = f.metadata.get("default_shown", _AUTO)
    if (shown is None and "default_shown" in f.metadata) or f.metadata.get("positional"):
        return text
    return f"{text} (default: {default if shown is _AUTO else shown})".lstrip()


class _Registry:
    """A registry's names as an option's ``choices`` (the cells' for ``--cell``), read from the registry
    whenever argparse asks (to check a value given, to show the usage or the help), never while the parser is
    built: the cells' registry imports torch, which ``rnnlab --help``, the commands without such an option and
    their errors need not wait for. As text, the names each with its line (the option's help, ``%(listed)s``)."""

    def __init__(self, read: Callable[[], dict[str, str]]):
        self.read = read  # name -> its one-line summary

    def __iter__(self) -> Iterator[str]:
        return iter(self.read())

    def __contains__(self, name: object) -> bool:
        return name in self.read()

    def __str__(self) -> str:
        return ", ".join(f"{k} ({v})" if v else k for k, v in self.read().items())


def add_options(parser: argparse.ArgumentParser, cls: type, title: str | None = None, skip: tuple[str, ...] = (),
                defaults: Any = None, helps: dict[str, str] | None = None, given_only: bool = True) -> None:
    """One argument per field of ``cls`` (into a group ``title``, or the parser's own options).

    ``given_only``: the default is suppressed, so that only given options are applied (a section's);
    otherwise it is in the namespace (a command's own options). ``defaults`` (an instance of ``cls``)
    supplies the defaults shown, where they differ from the class's; ``helps`` replaces the help of fields
    that mean something else to this command."""
    group: Any = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        if "section" in f.metadata or "sections" in f.metadata:
            _add_section(parser, f, tp)
            continue
        default = getattr(defaults, f.name) if defaults is not None else (
            f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                        else None))
        text = (helps or {}).get(f.name, f.metadata.get("help", ""))
        kw: dict[str, Any] = {"default": argparse.SUPPRESS if given_only else default}
        positional = f.metadata.get("positional", False)
        if not positional:
            kw["dest"] = f.name
        if f.metadata.get("flag"):  # a switch: --json, never --no-json
            group.add_argument(flag(f.name), action="store_true", help=_help(f, text, default), **kw)
            continue
        if tp is bool:
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, help=_help(f, text, default),
                               **kw)
            continue
        base = _value_type(tp)
        registry = None
        if "nargs" in f.metadata:
            kw["nargs"] = f.metadata["nargs"]
        if f.metadata.get("required"):
            kw["required"] = True
        if get_origin(base) is Literal:
            kw["choices"] = get_args(base)
        elif "choices" in f.metadata:  # a registry's names (the cells), each with its line in the help
            registry = _Registry(f.metadata["choices"])
        else:
            kw["type"] = {int: int, float: float, str: str}.get(base, str)
            if "metavar" in f.metadata:  # a command's own option names its value as declared
                if f.metadata["metavar"] is not None:
                    kw["metavar"] = f.metadata["metavar"]
            else:
                kw["metavar"] = {int: "N", float: "X", str: "S"}.get(base, "S")
        kw["help"] = _help(f, text, default)
        if positional:
            if not kw["help"]:
                kw["help"] = None
            action = group.add_argument(f.name, **kw)
        else:
            action = group.add_argument(flag(f.name), **kw)
        if registry is not None:  # set once added: argparse reads the choices and expands the help as it adds
            action.choices = action.listed = registry
            action.help = _help(f, f"{text}: %(listed)s", default)


def _add_section(parser: argparse.ArgumentParser, f: dataclasses.Field, tp: type) -> None:
    if "section" in f.metadata:
        add_options(parser, tp, f.metadata["section"], skip=f.metadata["skip"])
        return
    run = f.default_factory()  # the run config's defaults: a classifier's differ from a language model's
    for s in dataclasses.fields(tp):
        add_options(parser, typing.get_type_hints(tp)[s.name], f"{s.name} options", skip=f.metadata["skip"],
                    defaults=getattr(run, s.name), helps=f.metadata["helps"])


def option_fields(cls: type) -> list[tuple[str, dataclasses.Field]]:
    """Every argument ``cls`` generates, in order: its destination (the field's name) and the field, of
    ``cls`` itself or of a section's class."""
    out: list[tuple[str, dataclasses.Field]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [tp] if "section" in f.metadata else list(run_sections(tp).values()) if "sections" in f.metadata else []
        if not inner:
            out.append((f.name, f))
        for c in inner:
            out += [(g.name, g) for g in dataclasses.fields(c) if g.name not in f.metadata["skip"]]
    return out


def add_command(sub: argparse._SubParsersAction, name: str, options: type,
                func: Callable[[Any], int], **kw: Any) -> argparse.ArgumentParser:
    """The parser of one command (or action), its options generated from ``options``; ``func`` receives
    the ``options`` instance (:func:`from_args`)."""
    p = sub.add_parser(name, formatter_class=FMT, **kw)
    add_options(p, options, given_only=False)
    names = [name for name, _ in option_fields(options)]
    assert len(names) == len(set(names)), f"{options.__name__}: two fields share an option name"
    p.set_defaults(func=func, options=options)
    return p


def add_group(sub: argparse._SubParsersAction, name: str, **kw: Any) -> argparse._SubParsersAction:
    """A command with actions (``rnnlab NAME ACTION``): its parser (``kw``: help, description, epilog) and the
    subparsers its actions are added to with :func:`add_command`."""
    return sub.add_parser(name, formatter_class=FMT, **kw).add_subparsers(dest=f"{name}_cmd", required=True,
                                                                        metavar="ACTION")


def given(ns: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of ``cls`` given on the command line (a section's defaults are suppressed)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(ns).items() if k in names}


def from_args(ns: argparse.Namespace, cls: type) -> Any:
    """The ``cls`` instance the command line describes: its own options as parsed, each section its
    defaults overlaid with the options given (or made by the section's ``build``)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.metadata.get("build") is not None:
            kwargs[f.name] = f.metadata["build"](ns)
        elif "section" in f.metadata:
            kwargs[f.name] = from_dict(tp, {**dataclasses.asdict(f.default_factory()), **given(ns, tp)})
        elif hasattr(ns, f.name):
            kwargs[f.name] = getattr(ns, f.name)
    return cls(**kwargs)


def run_sections(cls: type) -> dict[str, type]:
    """A run config's sections by name (``data``: :class:`~rnnlab.config.DataConfig`, ...)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def config_from_args(ns: argparse.Namespace, cls: type) -> Any:
    """``cls``'s defaults (or, with --resume, the run's saved config), overlaid with the options given."""
    given_by_section = {section: given(ns, c) for section, c in run_sections(cls).items()}
    defaults = cls()
    if getattr(ns, "resume", False):
        from rnnlab.train import resume_config

        cfg = resume_config(getattr(ns, "out", defaults.train.out), given_by_section, kind=cls)
        if not isinstance(cfg, cls):
            raise ConfigError(f"--out {ns.out} holds a run of another kind ({type(cfg).__name__}), not a {cls.__name__}")
        return cfg
    base = defaults.to_dict()
    for section, values in given_by_section.items():
        base[section].update(values)
    return from_dict(cls, base)


# reporting ----------------------------------------------------------------------------------------

def print_json(obj: dict[str, Any]) -> None:
    print(jsonio.dumps(obj))


def fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def warn(message: str, file: Any = None) -> None:
    """A warning as the user sees every warning: one line on stderr."""
    print(f"rnnlab: warning: {message}", file=sys.stderr if file is None else file)


_USER_PATH = os.environ.get("PATH")  # as the user's shell gave it: building the C++ kernels puts ninja's folder in front


def command_name() -> str:
    """How to call rnnlab again from here, for the commands a run suggests (quoted for a shell): ``rnnlab`` where
    that name on the ``PATH`` is this program, or where it was started some other way and the ``PATH`` has one;
    else the path it was started by (``.venv/bin/rnnlab`` from ``scripts/demo``, the virtual environment not
    active), or ``python -m rnnlab`` with this interpreter."""
    me = Path(sys.argv[0])
    found = shutil.which("rnnlab", path=_USER_PATH)
    if me.name == "rnnlab":
        return "rnnlab" if found is not None and Path(found).resolve() == me.resolve() else shlex.quote(str(me))
    return "rnnlab" if found is not None else f"{shlex.quote(sys.executable)} -m rnnlab"


def report(summary: dict[str, Any], as_json: bool) -> None:
    """A training run's summary, a line per key (and as JSON); an interrupted run says how to go on."""
    if summary.get("stopped") == "interrupted":
        print(f"interrupted: saved {summary['run']}/last.safetensors; continue with --out {summary['run']} --resume",
              file=sys.stderr)
    lines = [f"{k}: {fmt(v)}" for k, v in summary.items()]
    print("\n".join(lines))
    if as_json:
        print_json(summary)


# shared by the commands that read a language model ------------------------------------------------

def sample_config(ns: argparse.Namespace) -> SampleConfig:
    """The sampling options given, checked; a warning names those the strategy ignores."""
    chosen = given(ns, SampleConfig)
    cfg = from_dict(SampleConfig, chosen).validate()
    unused = [k for k in ("temperature", "top_k", "top_p", "seed") if k in chosen] if cfg.strategy != "sample" else []
    if unused:
        warn(f"{', '.join(flag(k) for k in unused)} "
             f"{'does' if len(unused) == 1 else 'do'} not apply to --strategy {cfg.strategy}: ignored")
    if cfg.strategy != "sample" and cfg.num_samples > 1:
        warn(f"--strategy {cfg.strategy} is deterministic: its {cfg.num_samples} samples are the same text")
    return cfg


def load_lm(checkpoint: str, device: str) -> tuple[Any, Any, Any]:
    """The language model of ``checkpoint`` on ``device``."""
    from rnnlab.checkpoint import load_model
    from rnnlab.loop import resolve_device

    dev = resolve_device(device)  # a bad --device is refused before the file is read
    model, vocab, ckpt = load_model(checkpoint)
    return model.to(dev), vocab, ckpt


def run_corpus(ckpt: Any, needs: str) -> Any:
    """The corpus a language model's run trained on, refused where it changed since (its checksum differs from
    the run's split.json); a damaged split.json is a warning and the corpus is read unchecked."""
    from rnnlab.data.corpus import load_corpus
    from rnnlab.train import check_same_corpus

    corpus = load_corpus(ckpt.config.data)
    try:
        check_same_corpus(Path(ckpt.path).parent, corpus.record, needs)
    except CheckpointError as e:
        warn(f"{e}; the corpus is read unchecked")
    return corpus

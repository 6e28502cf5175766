"""``rnnlab tasks``: long-memory tasks (adding, copy, temporal order) trained for any length T."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from rnnlab.cli.common import (
    SEQUENCE_BATCH_HELP,
    add_command,
    add_group,
    given,
    json_option,
    option,
    quiet_option,
    report,
    run_sections,
    sections,
)
from rnnlab.config import TaskRunConfig

TASKS_EXAMPLES = """examples:
  rnnlab tasks run adding --cell elman --length 200 --time-budget 60 --out runs/adding-elman
  rnnlab tasks run adding --cell lstm --length 200 --time-budget 60 --out runs/adding-lstm
  rnnlab tasks run copy --cell gru --length 50 --max-steps 3000 --out runs/copy
  rnnlab tasks run temporal-order --cell elman --length 100 --recurrent-init orthogonal --norm-reg 0.005 \\
      --clip-norm 1 --out runs/order
  rnnlab tasks run adding --out runs/adding-elman --resume --time-budget 120
"""


def task_config_from_args(ns: argparse.Namespace) -> TaskRunConfig:
    """The task run's defaults (or its saved config, with --resume), the task named and the options given."""
    from rnnlab.task_train import resume_task_config

    chosen = {section: given(ns, cls) for section, cls in run_sections(TaskRunConfig).items()}
    chosen["task"]["name"] = ns.task
    if getattr(ns, "resume", False):
        return resume_task_config(getattr(ns, "out", TaskRunConfig().train.out), chosen)
    from rnnlab.loop import with_overrides

    return with_overrides(TaskRunConfig, TaskRunConfig().to_dict(), chosen, resume=False)


@dataclass(kw_only=True)
class TasksRunOptions:
    """``rnnlab tasks run``: the task, the run's config (a task's sequences are read whole: no truncation
    length; the task is named by the positional argument), and how the command reports."""

    task: Literal["adding", "copy", "temporal-order"] = option(positional=True)
    run: TaskRunConfig = sections(
        TaskRunConfig, task_config_from_args, skip=("seq_len", "name", "tie_weights"),
        helps=SEQUENCE_BATCH_HELP | {"eval_batch_size": "validation sequences scored at once"})
    json: bool = json_option()
    quiet: bool = quiet_option()


def cmd_run(o: TasksRunOptions) -> int:
    from rnnlab.task_train import train_task

    summary = train_task(o.run, progress=not o.quiet)
    report(summary, o.json)
    return 128 + summary["signal"] if summary["stopped"] == "interrupted" else 0


def register(sub: argparse._SubParsersAction) -> None:
    tsub = add_group(sub, "tasks", help="long-memory tasks: adding, copy, temporal order", epilog=TASKS_EXAMPLES,
                     description="Train a cell on a long-memory task for any length T and report success against "
                                 "the task's trivial baseline.")
    add_command(tsub, "run", TasksRunOptions, cmd_run, help="train on a task and report success",
                epilog=TASKS_EXAMPLES)


__all__ = ["TasksRunOptions", "register", "task_config_from_args"]

"""``rnnlab classify``: sequence classification with many-to-one RNNs (train, eval, predict)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from rnnlab.cli.common import (
    SEQUENCE_BATCH_HELP,
    add_command,
    add_group,
    checkpoint_option,
    config_from_args,
    json_option,
    option,
    print_json,
    quiet_option,
    report,
    sections,
)
from rnnlab.config import ClassifyRunConfig
from rnnlab.errors import ConfigError

CLASSIFY_EXAMPLES = """examples:
  rnnlab classify train --builtin digits --max-epochs 20 --out runs/digits       # 8x8 digits, a row a step
  rnnlab classify train --data names/ --time-budget 300 --out runs/names         # names/<Language>.txt
  rnnlab classify train --data reviews.csv --input-column review --label-column sentiment --level word \\
      --max-epochs 5 --out runs/reviews
  rnnlab classify eval runs/names                     # the run's test split: metrics, confusion matrix
  rnnlab classify eval runs/names --split val --plot confusion.png
  rnnlab classify predict runs/names Nguyen Schmidt "O'Neal" --top-k 3
  rnnlab classify train --out runs/names --resume --time-budget 600   # continue the same run
"""


def classify_config_from_args(ns: argparse.Namespace) -> ClassifyRunConfig:
    """The classifier defaults (or the run's saved config, with --resume), overlaid with the options given."""
    return config_from_args(ns, ClassifyRunConfig)


@dataclass(kw_only=True)
class ClassifyTrainOptions:
    """``rnnlab classify train``: the classifier run's config (a classifier reads whole sequences: no
    truncation length), and how the command reports."""

    run: ClassifyRunConfig = sections(
        ClassifyRunConfig, classify_config_from_args, skip=("seq_len", "tie_weights"),
        helps=SEQUENCE_BATCH_HELP | {"eval_batch_size": "validation sequences scored at once, x 8 (scoring needs "
                                                        "no gradients)"})
    json: bool = json_option()
    quiet: bool = quiet_option()


@dataclass(kw_only=True)
class ClassifyEvalOptions:
    """``rnnlab classify eval``: a classifier scored on its run's split or on other labelled data."""

    checkpoint: str = checkpoint_option()
    split: Literal["train", "val", "test"] | None = option(None, "the run's split", default_shown="test")
    data: str | None = option(None, "score every example of this folder or file instead", default_shown=None)
    plot: str | None = option(None, "write the confusion matrix to this PNG", default_shown=None)
    json: bool = json_option()


@dataclass(kw_only=True)
class ClassifyPredictOptions:
    """``rnnlab classify predict``: the most probable classes of each input."""

    checkpoint: str = checkpoint_option()
    inputs: list[str] = option(help="texts to classify", positional=True, nargs="+")
    top_k: int = option(3, "classes shown per input")
    json: bool = json_option()


def cmd_train(o: ClassifyTrainOptions) -> int:
    from rnnlab import classify

    summary = classify.train_classifier(o.run, progress=not o.quiet)
    report(summary, o.json)
    return 128 + summary["signal"] if summary["stopped"] == "interrupted" else 0


def cmd_eval(o: ClassifyEvalOptions) -> int:
    from rnnlab import classify

    if o.data and o.split:
        raise ConfigError("give --data FILE or --split NAME, not both")
    r = classify.evaluate_classifier(o.checkpoint, split=o.split or "test", data=o.data, plot=o.plot)
    print(f"checkpoint: {r['checkpoint']}\ndata: {r['data']} ({r['examples']} examples)")
    print(f"accuracy: {r['acc']:.4f}\nbalanced accuracy: {r['balanced_acc']:.4f}\nmacro F1: {r['macro_f1']:.4f}\n"
          f"loss: {r['loss']:.4f} nats per sequence")
    width = max(len(c) for c in r["per_class"])
    print(f"\n{'class':<{width}}  precision  recall     f1  support")
    for c, m in r["per_class"].items():
        print(f"{c:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}")
    print("\n" + r["confusion_text"])
    if r.get("plot"):
        print(f"\nconfusion matrix written to {r['plot']}")
    if o.json:
        print_json({k: v for k, v in r.items() if k != "confusion_text"})
    return 0


def cmd_predict(o: ClassifyPredictOptions) -> int:
    from rnnlab import classify

    rows = classify.predict(o.checkpoint, o.inputs, o.top_k)
    for row in rows:
        print(row["input"] + "\t" + "  ".join(f"{t['label']} {t['prob']:.3f}" for t in row["top"]))
    if o.json:
        print_json({"predictions": rows})
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    csub = add_group(sub, "classify", help="sequence classification: many-to-one RNNs",
                     description="Train, evaluate and use RNN sequence classifiers: an RNN (bidirectional by default) "
                                 "reads each sequence, and what its head reads of the states (--pool: the last state, the mean "
                                 "state or both) feeds a softmax over the classes; by default an ensemble of three, "
                                 "one head of each kind, predicting their mean probability.", epilog=CLASSIFY_EXAMPLES)
    add_command(csub, "train", ClassifyTrainOptions, cmd_train, help="train a classifier", epilog=CLASSIFY_EXAMPLES)
    add_command(csub, "eval", ClassifyEvalOptions, cmd_eval,
                help="accuracy, balanced accuracy, F1 and the confusion matrix", epilog=CLASSIFY_EXAMPLES)
    add_command(csub, "predict", ClassifyPredictOptions, cmd_predict, help="the most probable classes of each input",
                epilog=CLASSIFY_EXAMPLES)


__all__ = ["ClassifyEvalOptions", "ClassifyPredictOptions", "ClassifyTrainOptions", "classify_config_from_args",
           "register"]

"""The command line: the documented example commands, JSON summaries, and one-line errors."""

import json
import shlex
import subprocess
import sys

import pytest

from rnnlab.cli import build_parser, main


def _train_args(data, out, *extra):
    return ["train", "--data", str(data), "--cell", "lstm", "--hidden-size", "16", "--num-layers", "2",
            "--seq-len", "20", "--batch-size", "4", "--lr", "2e-3", "--clip-norm", "5", "--seed", "1",
            "--max-steps", "12", "--eval-interval", "6", "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small trained run shared by the tests that only read it."""
    from conftest import TEXT

    d = tmp_path_factory.mktemp("cli")
    (d / "corpus.txt").write_text(TEXT)
    assert main(_train_args(d / "corpus.txt", d / "x")) == 0
    return d / "x"


@pytest.fixture
def own_run(corpus_file, tmp_path):
    """A run a test may change (resume it)."""
    out = tmp_path / "x"
    assert main(_train_args(corpus_file, out)) == 0
    return out


def test_train_json_summary_is_the_last_line(corpus_file, tmp_path, capsys):
    out = tmp_path / "y"
    assert main(_train_args(corpus_file, out, "--json")) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert any("val" in k and "bpc" in k for k in summary) and summary["steps"] == 12
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["hidden_size"] == 16 and cfg["optim"]["clip_norm"] == 5.0 and cfg["train"]["seed"] == 1


def test_resume_continues_with_the_runs_own_settings(own_run, capsys):
    run = own_run
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "18", "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 18
    assert json.loads((run / "config.json").read_text())["model"]["hidden_size"] == 16


def test_resume_with_a_changed_model_is_refused(own_run, capsys):
    run = own_run
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "18", "--hidden-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "hidden_size" in err and err.startswith("rnnlab: error:")


def test_sample_is_seeded_and_primed(run, capsys):
    args = ["sample", str(run), "--prime", "the ", "--length", "40", "--temperature", "0.8", "--top-k", "5",
            "--seed", "3"]
    assert main(args) == 0
    a = capsys.readouterr().out
    assert main(args) == 0
    b = capsys.readouterr().out
    assert a == b and a.startswith("the ") and len(a.rstrip("\n")) == 44
    assert main(["sample", str(run / "last.safetensors"), "--strategy", "argmax", "--length", "10"]) == 0
    assert main(["sample", str(run), "--strategy", "beam", "--beam-width", "3", "--length", "10"]) == 0
    assert main(["sample", str(run), "--num-samples", "3", "--length", "10", "--top-p", "0.9"]) == 0
    assert capsys.readouterr().out.count("--- sample") == 3


def test_argmax_sample_equals_top_k_one(run, capsys):
    assert main(["sample", str(run), "--strategy", "argmax", "--length", "30", "--prime", "a"]) == 0
    a = capsys.readouterr().out
    assert main(["sample", str(run), "--top-k", "1", "--length", "30", "--prime", "a", "--seed", "9"]) == 0
    assert capsys.readouterr().out == a and len(a) == 32


def test_unknown_prime_characters_are_named(run, capsys):
    assert main(["sample", str(run), "--prime", "Zeus☃"]) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert "'Z'" in err and "'☃'" in err and "not in the model's vocabulary" in err
    assert len(err.strip().splitlines()) == 1 and captured.out == ""  # nothing printed before the refusal


def test_eval_on_the_split_and_on_a_file(run, corpus_file, tmp_path, capsys):
    assert main(["eval", str(run), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["val_bpc"] > 0 and s["data"] == "val split"
    (tmp_path / "other.txt").write_text("the cat sat on the log.\n")
    assert main(["eval", str(run), "--data", str(tmp_path / "other.txt"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["tokens"] == 23 and s["bpc"] > 0
    assert main(["eval", str(run), "--split", "test"]) == 2  # no test split in a single-file run
    assert main(["eval", str(run), "--split", "val", "--data", str(tmp_path / "other.txt")]) == 2
    (tmp_path / "unseen.txt").write_text("QQQ")
    assert main(["eval", str(run), "--data", str(tmp_path / "unseen.txt")]) == 1
    assert "'Q'" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["train", "--data", "/no/such/file.txt", "--max-steps", "1"], "no such file"),
    (["train", "--max-steps", "1"], "no corpus"),
    (["train", "--data", "x", "--max-steps", "1", "--hidden-size", "0", "--lr", "-1"], "hidden_size"),
    (["sample", "/no/such/run"], "no such checkpoint"),
    (["eval", "/no/such/run"], "no such checkpoint"),
    (["sample", "RUN", "--temperature", "0"], "temperature"),
    (["train", "--data", "x", "--time-budget", "nan"], "time_budget must be a finite number, got nan"),
    (["train", "--data", "x", "--max-epochs", "inf"], "max_epochs must be a finite number, got inf"),
    (["train", "--data", "x", "--max-steps", "1", "--clip-norm", "nan"], "clip_norm must be a finite number"),
    (["train", "--data", "x", "--max-steps", "1", "--weight-decay", "inf"], "weight_decay must be a finite number"),
    (["demo", "--time-budget", "nan"], "time_budget must be a finite number"),
    (["train", "--data", "x", "--max-steps", "1", "--seed", "99999999999999999999"], "seed must be a whole number"),
    (["exposure", "RUN", "--seed", "-1"], "seed must be a whole number from 0"),
    (["train", "--data", "x", "--max-steps", "1", "--out", ""], "out must name the run's folder"),
    (["gradients", "--checkpoint", "RUN", "--cells", "--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["gradients", "--cells", "elman", "--length", "5", "--plot", "/no/such/folder/g.png"], "does not exist"),
    (["train", "--data", "CORPUS", "--max-steps", "1", "--hidden-size", "100000000", "--num-layers", "1"],
     "not enough memory for the sizes asked for"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(argv, needle, run, corpus_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a run that started by mistake would land here
    argv = [{"RUN": str(run), "CORPUS": str(corpus_file)}.get(a, a) for a in argv]
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]  # nothing written


def test_files_that_are_not_a_runs_are_never_overwritten(corpus_file, tmp_path, capsys):
    """--out at a folder holding another program's config.json and split.json, an n-gram --out at the corpus, a run
    inside its own corpus folder: refused, nothing changed; a folder with unrelated files only takes the run."""
    mine = tmp_path / "proj"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": 1}')
    (mine / "split.json").write_text("precious")
    assert main(["train", "--data", str(corpus_file), "--max-steps", "1", "--out", str(mine)]) == 2
    assert "holds config.json, split.json, not written by a run" in capsys.readouterr().err
    assert (mine / "split.json").read_text() == "precious" and sorted(p.name for p in mine.iterdir()) == \
        ["config.json", "split.json"]
    before = corpus_file.read_bytes()
    assert main(["ngram", "fit", "--data", str(corpus_file), "--order", "2", "--out", str(corpus_file)]) == 2
    assert "is not an n-gram model" in capsys.readouterr().err and corpus_file.read_bytes() == before
    assert main(["ngram", "fit", "--data", str(corpus_file), "--order", "2", "--out", str(tmp_path / "m.npz")]) == 0
    assert main(["ngram", "fit", "--data", str(corpus_file), "--order", "3", "--out", str(tmp_path / "m.npz")]) == 0
    assert main(["train", "--data", str(tmp_path), "--max-steps", "1", "--out", str(tmp_path / "runs" / "x")]) == 2
    assert "lies inside the corpus folder" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(_train_args(corpus_file, other)[:-1]) == 0  # _train_args ends with --quiet
    assert (other / "notes.txt").read_text() == "mine" and (other / "last.safetensors").exists()


def test_eval_refuses_a_corpus_changed_since_training(own_run, corpus_file, capsys):
    assert main(["eval", str(own_run)]) == 0
    with open(corpus_file, "a") as f:
        f.write("one more line.\n")
    capsys.readouterr()
    assert main(["eval", str(own_run)]) == 1
    assert "the corpus has changed since the run" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02binary", "café".encode("latin-1")])
def test_bad_corpora_are_refused(content, tmp_path, capsys):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    assert main(["train", "--data", str(f), "--max-steps", "1", "--out", str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o" / "last.safetensors").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_corpus_shorter_than_one_batch(tmp_path, capsys):
    f = tmp_path / "short.txt"
    f.write_text("abcdefghij" * 20)
    assert main(["train", "--data", str(f), "--max-steps", "1", "--out", str(tmp_path / "o")]) == 1
    assert "one batch needs" in capsys.readouterr().err


def test_a_pickle_checkpoint_is_refused_by_the_shell(tmp_path):
    p = tmp_path / "model.pt"
    import torch

    torch.save({"a": 1}, p)
    r = subprocess.run([sys.executable, "-m", "rnnlab", "sample", str(p)], capture_output=True, text=True)
    assert r.returncode == 1 and "never unpickles" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("cmd", [[], ["train"], ["sample"], ["eval"], ["demo"], ["data"], ["data", "download"]])
def test_help_everywhere_with_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: rnnlab" in out
    if cmd in (["train"], ["sample"], ["eval"], ["demo"]):
        assert "examples:" in out


def test_json_summary_is_strict_json(monkeypatch, corpus_file, tmp_path, capsys):
    """A diverged run's infinities print as null, which every JSON parser accepts."""
    import rnnlab.cli as cli

    monkeypatch.setattr("rnnlab.train.train", lambda cfg, progress: {"run": "r", "stopped": "max_steps",
                                                                     "val_bpc": float("nan"), "best": float("inf")})
    assert cli.main(_train_args(corpus_file, tmp_path / "z", "--json")) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"run": "r", "stopped": "max_steps", "val_bpc": None, "best": None}
    assert "NaN" not in last and "Infinity" not in last


def test_word_level_samples_are_spaced_like_text(tmp_path, capsys):
    (tmp_path / "w.txt").write_text("the cat sat on the mat\nthe dog sat on the log\n" * 60)
    out = tmp_path / "w"
    args = _train_args(tmp_path / "w.txt", out, "--level", "word")
    args[args.index("--seq-len") + 1] = "8"
    assert main(args) == 0
    capsys.readouterr()
    assert main(["sample", str(out), "--prime", "the cat", "--length", "12", "--seed", "1"]) == 0
    streamed = capsys.readouterr().out
    from rnnlab.checkpoint import load_model
    from rnnlab.config import SampleConfig
    from rnnlab.sampling import generate

    model, vocab, _ = load_model(out)
    text = generate(model, vocab, SampleConfig(prime="the cat", length=12, seed=1))[0]
    assert streamed.startswith("the cat ") and "  " not in streamed and " \n" not in streamed
    assert streamed == text + "\n"  # the streamed pieces join to the returned text
    # a prime that ends in white space gets no second space before the first generated word
    assert main(["sample", str(out), "--prime", "the cat ", "--length", "12", "--seed", "1"]) == 0
    spaced = capsys.readouterr().out
    assert spaced == streamed  # the same words: the prime's trailing space is the separator
    text = generate(model, vocab, SampleConfig(prime="the cat\n", length=12, seed=1))[0]
    assert text.startswith("the cat\n") and text[len("the cat\n")] != " "


def test_sample_options_the_strategy_ignores_are_named(run, capsys):
    assert main(["sample", str(run), "--strategy", "beam", "--temperature", "0.5", "--top-k", "3",
                 "--num-samples", "2", "--length", "5"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["rnnlab: warning: --temperature, --top-k do not apply to --strategy beam: ignored",
                   "rnnlab: warning: --strategy beam is deterministic: its 2 samples are the same text"]
    assert main(["sample", str(run), "--temperature", "0.5", "--top-k", "3", "--length", "5", "--seed", "1"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args, says", [
    (["--seed=-1"], "seed must be a whole number from 0"),
    (["--length", "100000000000000000000"], "do not fit in memory"),
    (["--num-samples", "1000000000000", "--length", "1000"], "do not fit in memory"),
    (["--strategy", "beam", "--beam-width", "1000000000000"], "beam_width must be <= 10,000"),
    (["--device", "meta"], "device must be cpu, cuda, cuda:N or auto, got 'meta'"),
])
def test_impossible_sampling_requests_are_one_line(run, capsys, args, says):
    assert main(["sample", str(run), *args]) != 0
    captured = capsys.readouterr()
    assert says in captured.err and len(captured.err.strip().splitlines()) == 1 and captured.out == ""


def test_pytorch_option_names_exist():
    ns = build_parser().parse_args(["train", "--hidden-size", "512", "--num-layers", "2", "--dropout", "0.1",
                                    "--batch-size", "64", "--seq-len", "100", "--time-budget", "600"])
    assert (ns.hidden_size, ns.num_layers, ns.dropout, ns.batch_size, ns.seq_len, ns.time_budget) == \
        (512, 2, 0.1, 64, 100, 600.0)


def test_demo_trains_on_the_builtin_corpus_and_samples(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--time-budget", "2", "--out", str(out), "--quiet", "--json"]) == 0
    text = capsys.readouterr().out
    samples = text.split("=== sample, temperature")[1:]
    assert len(samples) == 3
    for block in samples:
        body = block.split("===\n", 1)[1]
        assert body.startswith("def ") and len(body.split("\nvalidation bits")[0].rstrip("\n")) >= 300
    summary = json.loads(text.strip().splitlines()[-1])
    assert summary["stopped"] == "time_budget" and summary["val_bpc"] > 0
    assert json.loads((out / "split.json").read_text())["kind"] == "builtin"


def test_demo_errors_name_only_demos_options_and_the_command_that_continues(tmp_path, corpus_file, capsys):
    for budget in ("0", "-5"):
        assert main(["demo", "--time-budget", budget, "--out", str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err
        assert "--time-budget must be a number of seconds > 0" in err and "--max-steps" not in err
    run = tmp_path / "run"
    assert main(["train", "--data", str(corpus_file), "--hidden-size", "8", "--num-layers", "1", "--max-steps", "1",
                 "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["demo", "--time-budget", "5", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    from rnnlab.cli.common import command_name

    assert err == f"rnnlab: error: --out {run} already holds a run: choose another --out, or continue that run " \
                  f"with {command_name()} train --out {run} --resume"
    assert not (tmp_path / "d").exists()


def test_demo_interrupted_says_how_to_continue_and_exits_as_train_does(tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "rnnlab", "demo", "--time-budget", "600", "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PATH": "/nonexistent"})
    deadline = time.monotonic() + 240
    while not (out / "last.safetensors").exists() and time.monotonic() < deadline:  # training has begun
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    # started as python -m rnnlab with no rnnlab on the PATH: the command it suggests is that one
    assert f"continue with {shlex.quote(sys.executable)} -m rnnlab train --out {out} --resume" in err
    assert "Traceback" not in err
    assert "=== sample" not in stdout


def test_the_command_a_run_suggests_is_one_the_user_can_type(tmp_path, monkeypatch):
    from rnnlab.cli import common
    from rnnlab.cli.common import command_name

    exe = tmp_path / "venv" / "bin" / "rnnlab"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["venv/bin/rnnlab", "demo"])
    monkeypatch.setattr(common, "_USER_PATH", "/nonexistent")
    assert command_name() == "venv/bin/rnnlab"  # not on the PATH: the path it was started by
    monkeypatch.setattr(common, "_USER_PATH", str(exe.parent))
    assert command_name() == "rnnlab"  # the PATH finds this very program
    other = tmp_path / "other"
    other.mkdir()
    (other / "rnnlab").write_text("#!/bin/sh\n")
    (other / "rnnlab").chmod(0o755)
    monkeypatch.setattr(common, "_USER_PATH", str(other))
    assert command_name() == "venv/bin/rnnlab"  # another rnnlab on the PATH is not this one
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "x" / "__main__.py")])
    assert command_name() == "rnnlab"  # python -m rnnlab, with an rnnlab on the PATH
    monkeypatch.setattr(common, "_USER_PATH", "/nonexistent")
    assert command_name() == f"{shlex.quote(sys.executable)} -m rnnlab"  # and with none
    spaced = tmp_path / "my venv" / "bin" / "rnnlab"
    monkeypatch.setattr(sys, "argv", [str(spaced)])
    assert command_name() == shlex.quote(str(spaced)) and command_name().startswith("'")


def test_the_demo_names_the_program_it_was_started_by(tmp_path, corpus_file, monkeypatch, capsys):
    from rnnlab.cli import common

    run = tmp_path / "run"
    assert main(["train", "--data", str(corpus_file), "--hidden-size", "8", "--num-layers", "1", "--max-steps", "1",
                 "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", [".venv/bin/rnnlab", "demo"])
    monkeypatch.setattr(common, "_USER_PATH", "/nonexistent")
    assert main(["demo", "--time-budget", "5", "--out", str(run)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"continue that run with .venv/bin/rnnlab train --out {run} --resume")

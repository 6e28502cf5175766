"""The command lines of the gradients guide: rnnlab gradients (fresh models and a trained checkpoint), rnnlab scratch train."""

import json

import pytest

from rnnlab.cli import main


def test_gradients_of_fresh_models_and_a_checkpoint(tmp_path, corpus_file, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(corpus_file), "--cell", "gru", "--hidden-size", "16", "--num-layers", "1",
                 "--max-steps", "3", "--eval-interval", "3", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    png, js = tmp_path / "g.png", tmp_path / "g.json"
    assert main(["gradients", "--cells", "elman", "--gain", "4", "--length", "20", "--hidden-size", "8",
                 "--checkpoint", str(run), "--batch-size", "2", "--plot", str(png), "--json-out", str(js)]) == 0
    out = capsys.readouterr().out
    report = json.loads(js.read_text())
    names = list(report["cells"])
    assert names == ["elman", f"gru {run} (step 3)"]
    assert all(len(e["norms"]) == 20 for e in report["cells"].values())
    assert report["cells"][names[1]]["spectra"][0]["gates"] == ["r", "z", "n"]  # a checkpoint's spectra too
    # two checkpoints of the same name (runs/a/best, runs/b/best; here one twice): a curve each
    assert main(["gradients", "--cells", "--checkpoint", str(run), str(run), "--length", "5", "--batch-size", "2",
                 "--json-out", str(js)]) == 0
    assert list(json.loads(js.read_text())["cells"]) == [f"gru {run} (step 3)", f"gru {run} (step 3) #2"]
    calm = tmp_path / "calm.json"
    assert main(["gradients", "--cells", "elman", "--length", "20", "--hidden-size", "8", "--batch-size", "2",
                 "--json-out", str(calm)]) == 0
    # a 4x larger recurrent weight carries far more gradient back to the first step
    grown = report["cells"]["elman"]["first_over_last"] / json.loads(calm.read_text())["cells"]["elman"]["first_over_last"]
    assert grown > 100
    assert "elman: |dL/dh_1| / |dL/dh_T|" in out and png.read_bytes()[:4] == b"\x89PNG"


def test_gradients_refuses_nonsense_in_one_line(capsys):
    assert main(["gradients", "--cells", "rnn"]) == 2
    assert "unknown cell 'rnn'" in capsys.readouterr().err
    assert main(["gradients", "--cells"]) == 2
    assert "nothing to measure" in capsys.readouterr().err


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_scratch_train_prints_a_falling_loss(tmp_path, capsys, optimizer):
    f = tmp_path / "t.txt"
    f.write_text("abcabcabcabd" * 40)
    assert main(["scratch", "train", str(f), "--hidden-size", "16", "--seq-len", "8", "--steps", "300",
                 "--log-interval", "100", "--optimizer", optimizer, "--lr", "0.1" if optimizer == "adagrad" else "0.5",
                 "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["final_smooth_loss"] < summary["initial_loss"] - 0.3
    assert sum(line.startswith("step") for line in lines) == 3


def test_tasks_run_reports_success_against_the_baseline(tmp_path, capsys):
    out = tmp_path / "adding"
    assert main(["tasks", "run", "adding", "--cell", "lstm", "--length", "10", "--hidden-size", "32", "--lr", "0.01",
                 "--max-steps", "400", "--eval-interval", "200", "--out", str(out), "--quiet", "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["task"] == "adding" and s["baseline"] == pytest.approx(1 / 6) and s["success"] is True
    assert s["val_loss"] < s["success_threshold"]
    assert main(["tasks", "run", "copy", "--length", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "length" in capsys.readouterr().err and not (tmp_path / "bad").exists()

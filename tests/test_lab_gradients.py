"""The lab's section on gradients through time (rnnlab.lab.sections.gradients): the gain curves against the library's
report and ``rnnlab gradients --gain``, clipping as one factor per curve, the connectivity of the lab's Elman, LSTM
and GRU against the library and zero after the position; bad parameters are 4xx answers; then the section in
chromium draws the API's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import lab_app, lab_screenshot
from fastapi.testclient import TestClient

from rnnlab.checkpoint import load_model
from rnnlab.cli import main
from rnnlab.gradients import connectivity, gradient_report

TEXT = "def f(x):\n    return x + 1\n"


@pytest.fixture(scope="module")
def client(lab_cache) -> TestClient:
    with TestClient(lab_app(lab_cache)) as c:
        yield c


def test_the_gain_curves_are_the_librarys_report(client, tmp_path, capsys):
    body = {"gain": 2.5, "length": 20, "hidden_size": 16, "batch_size": 2, "seed": 4}
    got = client.post("/api/lab/gradients/curves", json=body).json()
    want = gradient_report(cells=("elman", "lstm", "gru"), hidden_size=16, length=20, seed=4, batch_size=2,
                           recurrent_gain=2.5)
    assert list(got["cells"]) == ["elman", "lstm", "gru"] and got["steps"] == list(range(1, 21))
    for cell, entry in want["cells"].items():
        np.testing.assert_allclose(got["cells"][cell]["norms"], entry["norms"], rtol=1e-12)
        assert got["cells"][cell]["clip_factor"] == 1.0 and got["cells"][cell]["clipped_norms"] == entry["norms"]
    # the command line draws the same curves: rnnlab gradients --gain
    out = tmp_path / "g.json"
    assert main(["gradients", "--cells", "elman", "lstm", "gru", "--hidden-size", "16", "--length", "20",
                 "--batch-size", "2", "--num-layers", "1", "--seed", "4", "--gain", "2.5", "--json-out",
                 str(out)]) == 0
    capsys.readouterr()
    cli = json.loads(out.read_text())
    for cell in ("elman", "lstm", "gru"):
        np.testing.assert_allclose(got["cells"][cell]["norms"], cli["cells"][cell]["norms"], rtol=1e-12)


def test_a_larger_gain_makes_the_elman_curve_fall_less_and_clipping_moves_each_curve_by_one_factor(client):
    small = client.post("/api/lab/gradients/curves", json={"gain": 0.5, "length": 30}).json()["cells"]
    large = client.post("/api/lab/gradients/curves", json={"gain": 4.0, "length": 30}).json()["cells"]
    assert large["elman"]["first_over_last"] > 100 * small["elman"]["first_over_last"]
    clipped = client.post("/api/lab/gradients/curves", json={"gain": 4.0, "length": 30, "clip": True,
                                                             "clip_norm": 0.1}).json()["cells"]
    for cell, entry in clipped.items():
        assert entry["norms"] == large[cell]["norms"]  # clipping does not change how the gradient flows
        f = entry["clip_factor"]
        assert f == pytest.approx(min(1.0, 0.1 / entry["grad_norm"])) and f < 1.0
        np.testing.assert_allclose(entry["clipped_norms"], np.array(entry["norms"]) * f, rtol=1e-12)
        # so the ratio of the first step to the last, the vanishing, is the same
        assert entry["clipped_norms"][0] / entry["clipped_norms"][-1] == pytest.approx(entry["first_over_last"])


def test_the_clipped_curves_are_those_of_rnnlab_gradients_clip_norm(client, tmp_path, capsys):
    got = client.post("/api/lab/gradients/curves", json={"gain": 3.0, "length": 12, "hidden_size": 8, "clip": True,
                                                         "clip_norm": 0.2}).json()
    out = tmp_path / "g.json"
    assert main(["gradients", "--hidden-size", "8", "--length", "12", "--batch-size", "4", "--gain", "3",
                 "--clip-norm", "0.2", "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    cli = json.loads(out.read_text())
    for cell in ("elman", "lstm", "gru"):
        np.testing.assert_allclose(got["cells"][cell]["clipped_norms"], cli["cells"][cell]["clipped_norms"], rtol=1e-12)
        assert got["cells"][cell]["clip_factor"] == pytest.approx(cli["cells"][cell]["clip_factor"], rel=1e-12)
    assert f"clipped by x{cli['cells']['elman']['clip_factor']:.3g}" in printed
    assert main(["gradients", "--clip-norm", "-1"]) == 2
    assert "clip_norm must be a number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["elman", "lstm", "gru"])
def test_connectivity_is_the_librarys_and_zero_after_the_position(client, lab_cache, name):
    got = client.post("/api/lab/gradients/connectivity", json={"model": name, "text": TEXT}).json()
    model, vocab, ckpt = load_model(lab_cache / name)
    want = connectivity(model, vocab.encode(TEXT))  # (N-1, N-1)
    assert got["cell"] == ckpt.config.model.cell == name and got["tokens"] == list(TEXT)
    assert len(got["rows"]) == len(TEXT) - 1
    for t, row in enumerate(got["rows"]):
        assert len(row) == t + 1  # positions 0..t; everything after t is zero
        np.testing.assert_allclose(row, want[t, :t + 1], rtol=1e-4)
        assert np.all(want[t, t + 1:] == 0.0)
    assert got["max"] == pytest.approx(want.max())


def test_connectivity_is_what_rnnlab_connectivity_writes(client, lab_cache, tmp_path, capsys):
    got = client.post("/api/lab/gradients/connectivity", json={"model": "gru", "text": TEXT}).json()
    out = tmp_path / "c.json"
    assert main(["connectivity", str(lab_cache / "gru"), "--text", TEXT, "--json-out", str(out), "--plot",
                 str(tmp_path / "c.png")]) == 0
    printed = capsys.readouterr().out.splitlines()
    cli = json.loads(out.read_text())
    assert cli["tokens"] == got["tokens"]
    for row, want in zip(got["rows"], cli["rows"], strict=True):
        np.testing.assert_allclose(row, want, rtol=1e-4)
    last = np.array(cli["rows"][-1])  # the last line names the characters the last prediction depends on most
    assert printed[len(TEXT) - 2].split("strongest: ")[1].startswith(f"{int(last.argmax())} ")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["connectivity", str(lab_cache / "gru")]) == 2
    assert "--text TEXT or --text-file FILE" in capsys.readouterr().err


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("curves", {"gain": 0.0}, 422, "gain"),
    ("curves", {"gain": 21.0}, 422, "gain"),
    ("curves", {"gain": "2"}, 422, "gain"),
    ("curves", {"length": 101}, 422, "length"),
    ("curves", {"length": 1}, 422, "length"),
    ("curves", {"hidden_size": 65}, 422, "hidden_size"),
    ("curves", {"batch_size": 9}, 422, "batch_size"),
    ("curves", {"clip": True, "clip_norm": 0}, 422, "clip_norm"),
    ("curves", {"clip": 1}, 422, "clip"),
    ("curves", {"loss": "mean"}, 422, "loss"),
    ("curves", {"cells": ["elman"]}, 422, "cells"),
    ("connectivity", {"text": "a"}, 422, "text"),
    ("connectivity", {"text": "x" * 201}, 422, "text"),
    ("connectivity", {"text": "ab\u20ac"}, 422, "text"),
    ("connectivity", {"model": "nope", "text": "ab"}, 404, "no model 'nope'"),
    ("connectivity", {"model": "digits", "text": "ab"}, 422, "not a language model"),
])
def test_bad_parameters_are_4xx_with_one_line(client, path, body, status, says):
    r = client.post(f"/api/lab/gradients/{path}", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"] and "\n" not in r.json()["error"]


def test_a_model_not_trained_yet_is_a_503_with_its_progress(tmp_path):
    with TestClient(lab_app(tmp_path / "empty")) as c:
        r = c.post("/api/lab/gradients/connectivity", json={"model": "gru", "text": "ab"})
        assert r.status_code == 503 and r.json()["model"] == "gru" and "progress" in r.json()
        assert c.post("/api/lab/gradients/curves", json={}).status_code == 200  # fresh models: nothing to wait for


# --- the page, in chromium ------------------------------------------------------------------------------

def _ys(d: str) -> list[float]:
    """The y coordinates of an SVG path's points ("M x y L x y ...")."""
    nums = d.replace("M", " ").replace("L", " ").split()
    return [float(v) for v in nums[1::2]]


def test_the_page_draws_the_gain_curves_and_the_connectivity(lab_cache):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing: run scripts/install-browser")
    import httpx
    from conftest import LabServer

    with LabServer(lab_cache) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{server.url}/lab#gradients")
            sec = page.locator("#panel-gradients")
            chart = sec.locator(".gr-curves")
            chart.locator("path[data-cell='gru']").wait_for(state="attached", timeout=20000)
            # move the gain slider with the keyboard; the curves drawn are the API's for that gain
            slider = sec.get_by_label("Recurrent gain")
            slider.focus()
            for _ in range(4):
                page.keyboard.press("ArrowRight")
            gain = float(slider.input_value())
            assert gain > 1.0
            sync_api.expect(chart).to_have_attribute("data-gain", str(gain), timeout=20000)
            settings = json.loads(chart.get_attribute("data-settings"))
            assert settings["gain"] == gain and settings["clip"] is False
            want = httpx.post(f"{server.url}/api/lab/gradients/curves", json=settings, timeout=30).json()
            for cell in ("elman", "lstm", "gru"):
                path = chart.locator(f"path[data-cell='{cell}']")
                values = json.loads(path.get_attribute("data-values"))
                np.testing.assert_allclose(values, want["cells"][cell]["norms"], rtol=1e-9)
                ys = _ys(path.get_attribute("d"))  # a log axis: y falls as log |dL/dh_t| rises, linearly
                logs = np.log10(values)
                assert len(ys) == len(values)
                if np.ptp(logs) > 0:
                    np.testing.assert_allclose(np.polyfit(logs, ys, 1)[0] * np.ptp(logs), -np.ptp(ys), rtol=1e-3)
            # clipping on: the curves drawn are the clipped ones
            sec.get_by_label("Clip the gradient norm").check()
            sync_api.expect(chart).to_have_attribute("data-clip", "true", timeout=20000)
            settings = json.loads(chart.get_attribute("data-settings"))
            want = httpx.post(f"{server.url}/api/lab/gradients/curves", json=settings, timeout=30).json()
            values = json.loads(chart.locator("path[data-cell='elman']").get_attribute("data-values"))
            np.testing.assert_allclose(values, want["cells"]["elman"]["clipped_norms"], rtol=1e-9)

            # connectivity: three panels side by side, the position moved with the arrow keys
            conn = sec.locator(".gr-connectivity")
            conn.locator(".gr-panel[data-model='gru'] .gr-char").first.wait_for(timeout=30000)
            text = sec.get_by_label("Text for the connectivity view").input_value()
            panel = conn.locator(".gr-panel[data-model='lstm']")
            panel.focus()
            page.keyboard.press("End")
            for _ in range(3):
                page.keyboard.press("ArrowLeft")
            t = len(text) - 2 - 3
            assert panel.get_attribute("data-t") == str(t)
            got = httpx.post(f"{server.url}/api/lab/gradients/connectivity", json={"model": "lstm", "text": text},
                             timeout=30).json()
            shown = panel.locator(".gr-char").evaluate_all("els => els.map(e => e.dataset.value)")
            assert len(shown) == len(text)
            np.testing.assert_allclose([float(v) for v in shown[:t + 1]], got["rows"][t], rtol=1e-9)
            assert all(float(v) == 0.0 for v in shown[t + 1:])  # nothing after the position
            for name in ("elman", "gru"):  # the three panels follow one position
                assert conn.locator(f".gr-panel[data-model='{name}']").get_attribute("data-t") == str(t)
            assert sec.locator(".lab-legend").count() >= 1
            width = conn.evaluate("e => [e.scrollWidth, e.clientWidth]")
            assert width[0] <= width[1] + 1  # the text wraps inside its panels
            lab_screenshot(page, "gradients")
        finally:
            browser.close()

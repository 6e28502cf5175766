"""The lab's Elman section (rnnlab.lab.sections.elman): the hidden states and probabilities it answers
against the Elman equations computed step by step with the model's own weights, and against the
library's one-pass scores; bad parameters are 4xx answers; then the page in chromium steps through a
text and draws the API's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import lab_app, lab_screenshot
from fastapi.testclient import TestClient

from rnnlab.checkpoint import load_model
from rnnlab.introspect import score_tokens

TEXT = "def f(x):\n    return x"


@pytest.fixture(scope="module")
def client(lab_cache) -> TestClient:
    with TestClient(lab_app(lab_cache)) as c:
        yield c


def _oracle(run: Path, text: str) -> tuple[np.ndarray, np.ndarray]:
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) from h_0 = 0 and y_t = softmax(W_hy h_t + b_y), in
    float64 NumPy with the checkpoint's weights; x_t is the one-hot of the t-th character, or its embedding
    E[:, c] where the model has one. Returns h (T, H) and y (T, V)."""
    model, vocab, _ = load_model(run)
    w = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    ids = vocab.encode(text)
    x = w["embedding.weight"][ids] if "embedding.weight" in w else np.eye(len(vocab))[ids]  # (T, I)
    cell = "rnn.layers.0."
    h, hs = np.zeros(w[cell + "weight_hh"].shape[0]), []
    for x_t in x:
        h = np.tanh(w[cell + "weight_ih"] @ x_t + w[cell + "bias_ih"] + w[cell + "weight_hh"] @ h + w[cell + "bias_hh"])
        hs.append(h)
    z = np.array(hs) @ w["decoder.weight"].T + w["decoder.bias"]  # (T, V)
    y = np.exp(z - z.max(axis=1, keepdims=True))
    return np.array(hs), y / y.sum(axis=1, keepdims=True)


def test_steps_are_the_elman_equations(client, lab_cache):
    got = client.post("/api/lab/elman/steps", json={"text": TEXT, "top": 5}).json()
    h, y = _oracle(lab_cache / "elman", TEXT)
    assert got["tokens"] == list(TEXT) and got["cell"] == "elman" and got["hidden_size"] == h.shape[1]
    assert got["level"] == "char" and "".join(got["pieces"]) == TEXT
    np.testing.assert_allclose(np.array(got["hidden"]), h, atol=1e-5)
    for t, row in enumerate(got["top"]):
        order = np.argsort(-y[t], kind="stable")[:5]
        assert [c["id"] for c in row] == order.tolist()
        assert [c["symbol"] for c in row] == [got["symbols"][i] for i in order]
        np.testing.assert_allclose([c["p"] for c in row], y[t, order], atol=1e-6)
    ids = np.array(got["ids"])
    np.testing.assert_allclose(got["next_p"][:-1], y[np.arange(len(ids) - 1), ids[1:]], atol=1e-6)
    assert got["next_p"][-1] is None
    # the weights are one set for every step: their shapes, W_hh square
    assert got["weights"]["W_hh"] == [h.shape[1], h.shape[1]] and got["weights"]["W_hy"] == [len(got["symbols"]), h.shape[1]]
    assert got["parameters"] == sum(v.numel() for v in load_model(lab_cache / "elman")[0].parameters())


def test_the_next_character_probabilities_are_the_librarys_scores(client, lab_cache):
    model, vocab, _ = load_model(lab_cache / "elman")
    got = client.post("/api/lab/elman/steps", json={"text": TEXT}).json()
    np.testing.assert_allclose(got["next_p"][:-1], score_tokens(model, vocab.encode(TEXT)).prob, rtol=1e-5)


def test_a_model_not_trained_yet_is_a_503_with_its_progress(tmp_path):
    with TestClient(lab_app(tmp_path / "empty")) as c:
        r = c.post("/api/lab/elman/steps", json={"text": "ab"})
    assert r.status_code == 503 and r.json()["model"] == "elman" and "progress" in r.json()


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"text": ""}, 422, "text"),
    ({"text": "x" * 201}, 422, "text"),
    ({"text": "a\u20ac"}, 422, "text"),
    ({"text": "ab", "top": 0}, 422, "top"),
    ({"text": "ab", "top": 21}, 422, "top"),
    ({"text": "ab", "model": "nope"}, 404, "no model 'nope'"),
    ({"text": "ab", "model": "lstm"}, 422, "is a lstm"),
    ({"text": "ab", "model": "digits"}, 422, "not a language model"),
    ({"text": "ab", "layer": 1}, 422, "layer"),
    ({"text": 5}, 422, "text"),
])
def test_bad_parameters_are_4xx_with_one_line(client, body, status, says):
    r = client.post("/api/lab/elman/steps", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"] and "\n" not in r.json()["error"]


# --- the page, in chromium ------------------------------------------------------------------------------

def test_the_page_steps_through_a_text(lab_cache):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing: run scripts/install-browser")
    import httpx
    from conftest import LabServer

    text = "for i in x:"
    with LabServer(lab_cache) as server, sync_api.sync_playwright() as p:
        want = httpx.post(f"{server.url}/api/lab/elman/steps", json={"text": text}, timeout=30).json()
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{server.url}/lab#elman")
            sec = page.locator("#panel-elman")
            box = sec.get_by_label("Text to feed")
            box.wait_for(timeout=15000)
            box.fill(text)
            sec.get_by_role("button", name="Reset").click()
            assert sec.locator(".el-t").inner_text() == "t = 0"  # the state starts at zeros
            assert all(float(v) == 0.0 for v in sec.locator(".el-hidden [data-value]").evaluate_all(
                "els => els.map(e => e.dataset.value)"))
            step = sec.get_by_role("button", name="Step")
            for _ in range(3):
                step.click()
            page.wait_for_function("() => document.querySelector('#panel-elman .el-t').textContent === 't = 3'", timeout=10000)
            # x_3 lights the third character; h_3 is the API's; the bars are y_3's top symbols
            lit = sec.locator(".el-onehot [data-lit=true]")
            assert lit.count() == 1 and lit.get_attribute("data-symbol") == text[2]
            shown = [float(v) for v in sec.locator(".el-hidden [data-value]").evaluate_all(
                "els => els.map(e => e.dataset.value)")]
            np.testing.assert_allclose(shown, want["hidden"][2], atol=1e-6)
            bars = sec.locator(".el-output [data-p]")
            assert [b.get_attribute("data-symbol") for b in bars.all()] == [c["symbol"] for c in want["top"][2]]
            np.testing.assert_allclose([float(b.get_attribute("data-p")) for b in bars.all()],
                                       [c["p"] for c in want["top"][2]], rtol=1e-6)
            # the unrolled view has one column per step so far, every recurrent arrow labelled W_hh
            assert sec.locator(".el-unrolled .el-col").count() == 3
            assert sec.locator(".el-unrolled text.w-hh").all_text_contents() == ["W_hh"] * 3
            assert sec.locator(".lab-legend").count() >= 1
            sec.get_by_role("button", name="Back").click()
            page.wait_for_function("() => document.querySelector('#panel-elman .el-t').textContent === 't = 2'", timeout=10000)
            assert sec.locator(".el-unrolled .el-col").count() == 2
            step.click()
            lab_screenshot(page, "elman")
        finally:
            browser.close()

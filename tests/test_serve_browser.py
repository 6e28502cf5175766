"""End to end in a real headless browser: Debian's chromium, driven by Playwright, against the real
server (``rnnlab.serve.serve`` in a subprocess on a free loopback port). It generates text, hovers a
character and reads the probability panel, scores a pasted text, looks at a unit, and saves a
screenshot; then it picks the classifier served beside the language model, types a name and reads
the class probability bars. Skips when chromium or Playwright is missing (``scripts/install-browser`` installs
chromium; Playwright comes with the test extra)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rnnlab.checkpoint import load_model
from rnnlab.classify import predict
from rnnlab.config import DataConfig, ModelConfig, OptimConfig, RunConfig, SampleConfig, TrainConfig
from rnnlab.sampling import generate
from rnnlab.train import train

CHROMIUM = Path("/usr/bin/chromium")
SNIPPET = "the cat sat on the mat.\nthe dog sat on the log."

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: run scripts/install-browser (Debian's chromium)", allow_module_level=True)


def _stop(proc: subprocess.Popen) -> None:
    """End a server process: SIGTERM, then SIGKILL if it has not exited in 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real server on loopback, serving a tiny LSTM and a tiny names classifier, each trained for a
    few steps; yields (url, run, classifier run)."""
    from conftest import TEXT, tiny_names_classifier

    d = tmp_path_factory.mktemp("browser")
    (d / "corpus.txt").write_text(TEXT, encoding="utf-8")
    run = d / "lstm"
    train(RunConfig(data=DataConfig(data=str(d / "corpus.txt")),
                    model=ModelConfig(cell="lstm", hidden_size=16, num_layers=2, dropout=0.0, embedding_size=8),
                    optim=OptimConfig(lr=1e-2),
                    train=TrainConfig(batch_size=4, seq_len=16, max_steps=6, eval_interval=6, log_interval=3, seed=1,
                                      out=str(run))), progress=False)
    names = tiny_names_classifier(d)
    port = _free_port()
    log = open(d / "server.log", "wb")
    code = (f"from rnnlab.serve import serve; serve([{str(run)!r}, {str(names)!r}], host='127.0.0.1', port={port}, "
            "log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {(d / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url, run, names
    finally:
        _stop(proc)
        log.close()


def test_the_page_generates_shows_probabilities_scores_and_units(server, tmp_path):
    url, run, _ = server
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.goto(url)
            # (waits use selectors: the page's CSP forbids the string evaluation wait_for_function needs)
            page.wait_for_selector("#model option", state="attached")
            assert page.locator("#model option").count() == 2  # the language model first, chosen
            assert page.is_visible("#write") and page.is_hidden("#classify")

            # write: top-k 3 at temperature 0.8, seeded, so the text is known and the chosen
            # character is among the model's top 3 (temperature keeps the order)
            page.fill("#prime", "the cat")
            page.select_option("#sampler", "top-k")
            page.fill("#top-k", "3")
            page.fill("#temperature", "0.8")
            page.fill("#length", "80")
            page.fill("#seed", "7")
            page.click("#generate")
            page.wait_for_selector("#output[data-done='1']", state="attached", timeout=20_000)
            spans = page.locator("#output .gen")
            assert spans.count() == 80
            model, vocab, _ = load_model(run)
            want = generate(model, vocab, SampleConfig(prime="the cat", length=80, temperature=0.8, top_k=3, seed=7))[0]
            assert page.evaluate("state.generated") == want[len("the cat"):]

            # hover a generated character: the panel shows the model's 5 most probable next characters
            spans.nth(10).hover()
            rows = page.locator("#prob-list .prob-row")
            rows.first.wait_for()
            assert rows.count() == 5
            ps = [float(rows.nth(k).get_attribute("data-p")) for k in range(5)]
            assert all(0 <= p <= 1 for p in ps) and sum(ps) <= 1 + 1e-9 and ps == sorted(ps, reverse=True)
            assert "Step 11" in page.inner_text("#prob-title")
            chosen = page.locator("#prob-list .prob-row.chosen")
            assert chosen.count() == 1 and chosen.get_attribute("data-text") == want[len("the cat") + 10]
            spans.nth(3).click()  # a tap does the same
            assert "Step 4" in page.inner_text("#prob-title")

            # read: paste a text, every character coloured, the bits per character shown
            page.fill("#text", SNIPPET)
            page.click("#score-btn")
            page.wait_for_selector("#score-bpc[data-bits]")
            shown = float(page.get_attribute("#score-bpc", "data-bits"))
            api = httpx.post(f"{url}/api/score", json={"text": SNIPPET}).json()
            assert shown == pytest.approx(api["mean_bits"], rel=1e-12)
            assert f"{api['mean_bits']:.3f} bits per character" in page.inner_text("#score-bpc")
            toks = page.locator("#score-out .tok")
            assert toks.count() == len(SNIPPET)
            toks.nth(5).hover()
            assert page.locator("#score-list .prob-row").count() == 5
            assert "running" in page.inner_text("#score-title")

            # inside: the top-ranked units of the top layer's forget gate, coloured over the text
            page.select_option("#layer", "1")
            page.select_option("#quantity", "f")
            page.click("#top-units-btn")
            page.wait_for_selector("#unit-chips .chip")
            assert page.locator("#unit-chips .chip").count() == 8
            cells = page.locator("#inside-out .tok")
            assert cells.count() == len(SNIPPET)
            values = [float(v) for v in page.eval_on_selector_all("#inside-out .tok", "els => els.map(e => e.dataset.v)")]
            assert all(0 <= v <= 1 for v in values)  # a gate
            page.select_option("#quantity", "c")  # the cell state of the same unit, from the same answer
            page.fill("#unit", "3")
            page.click("#inside-btn")
            page.wait_for_selector("#inside-value:has-text('unit 3, c')")
            assert page.locator("#inside-out .tok").count() == len(SNIPPET)

            shot = tmp_path / "page.png"
            spans.nth(10).hover()
            page.screenshot(path=str(shot), full_page=True)

            # an error is one line on the page, and the text already there stays
            page.fill("#prime", "Zeus\u2603")
            page.click("#generate")
            page.wait_for_selector("#error", state="visible")
            assert "not in the model's vocabulary" in page.inner_text("#error")
            assert page.locator("#output .gen").count() == 80
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert [p for p in problems if "422" not in p] == []  # the 422 above is logged by the browser, as expected


def test_the_page_shows_a_classifiers_class_probabilities(server, tmp_path):
    url, _, names = server
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.goto(url)
            page.wait_for_selector("#model option", state="attached")
            page.select_option("#model", label="names")
            # a classifier: the Classify panel, and none of the language model's
            page.wait_for_selector("#classify", state="visible")
            for panel in ("#write", "#read", "#inside"):
                assert page.is_hidden(panel), panel
            assert "classifier" in page.inner_text("#model-info") and "3 classes" in page.inner_text("#model-info")

            # typing is enough: the bars follow the text (debounced)
            page.locator("#classify-text").press_sequentially("novikov", delay=30)
            page.wait_for_selector("#class-list[data-model='names'] .class-row", state="attached")
            page.wait_for_selector("#classify-status:has-text('novikov')")
            rows = page.locator("#class-list .class-row")
            assert rows.count() == 3
            got = [(rows.nth(k).get_attribute("data-label"), float(rows.nth(k).get_attribute("data-p"))) for k in range(3)]
            ps = [p for _, p in got]
            assert sum(ps) == pytest.approx(1.0, abs=1e-9) and ps == sorted(ps, reverse=True)
            want = predict(names, ["novikov"], top_k=3)[0]["top"]
            assert [label for label, _ in got] == [c["label"] for c in want]
            assert ps == pytest.approx([c["prob"] for c in want], rel=1e-6, abs=1e-9)
            # each row shows its probability as a bar and as a number
            for k, (label, p) in enumerate(got):
                assert rows.nth(k).locator(".label").inner_text() == label
                assert rows.nth(k).locator(".pct").inner_text() == f"{100 * p:.1f}%"
            widths = [rows.nth(k).locator(".bar").bounding_box()["width"] for k in range(3)]
            track = rows.first.locator(".track").bounding_box()["width"]
            assert widths == sorted(widths, reverse=True)
            assert widths[0] == pytest.approx(track * ps[0], abs=2)

            # the button classifies another text; the answer replaces the bars
            page.fill("#classify-text", "gomez")
            page.click("#classify-btn")
            page.wait_for_selector("#classify-status:has-text('gomez')")
            assert page.locator("#class-list .class-row").first.get_attribute("data-label") == \
                predict(names, ["gomez"], top_k=1)[0]["top"][0]["label"]
            shot = tmp_path / "classify.png"
            page.screenshot(path=str(shot), full_page=True)

            # a character the classifier never saw: one line naming it
            page.fill("#classify-text", "gomez\u2603")
            page.click("#classify-btn")
            page.wait_for_selector("#error", state="visible")
            assert "'\u2603'" in page.inner_text("#error")

            # back to the language model: its panels return
            page.select_option("#model", label="lstm")
            page.wait_for_selector("#write", state="visible")
            assert page.is_hidden("#classify") and page.is_hidden("#error")
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5_000
    assert [p for p in problems if "422" not in p] == []  # the 422 above is logged by the browser, as expected


def test_the_page_and_the_docs_load_nothing_from_another_host(server):
    url, _, _ = server
    requested: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page()
            page.on("request", lambda r: requested.append(r.url))
            page.goto(url)
            page.wait_for_selector("#model option", state="attached")
            page.goto(f"{url}/docs")
            page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)  # Swagger UI ran and read the schema
            assert "/api/generate" in page.inner_text(".swagger-ui")
        finally:
            browser.close()
    assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u in requested)
    assert [u for u in requested if not u.startswith(url + "/") and not u.startswith("data:")] == []


def test_the_page_keeps_the_token_of_the_address_it_was_opened_with(server, tmp_path):
    """A server that asks for a token: the page opened with ?token= sends it with every request (as a
    header, kept for the tab); the page without it is a 401."""
    _, run, _ = server
    token = "browser-test-token-0123456789"
    port = _free_port()
    code = (f"from rnnlab.serve import serve; serve([{str(run)!r}], host='127.0.0.1', port={port}, "
            f"log_level='warning', token={token!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/models", params={"token": token}, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        problems: list[str] = []
        sent: list[str | None] = []
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM))
            try:
                page = browser.new_page()
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/api/" in r.url else None)
                assert page.goto(url).status == 401
                assert page.goto(f"{url}/?token={token}").status == 200
                page.wait_for_selector("#model option", state="attached")
                page.fill("#prime", "the cat")
                page.fill("#length", "20")
                page.fill("#seed", "7")
                page.click("#generate")
                page.wait_for_selector("#output[data-done='1']", state="attached", timeout=20_000)
                assert page.locator("#output .gen").count() == 20
                assert page.evaluate("sessionStorage.getItem('rnnlab-token')") == token
            finally:
                browser.close()
        assert problems == [] and len(sent) >= 2 and set(sent) == {f"Bearer {token}"}
    finally:
        _stop(proc)

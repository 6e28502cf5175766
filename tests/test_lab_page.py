"""The lab's page as a whole, in chromium: every tab draws completely (the shell's ``data-drawn`` mark comes after
each figure the tab draws on opening) with nothing asked of another host, every control has a name, every
colour scale its legend, and long lines and runs of spaces wrap inside their panel (the page never grows wider
than the window). The server's warm-up and the torch threads of the section handlers are checked through the
API."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import lab_app
from fastapi.testclient import TestClient

from rnnlab.lab import SECTION_THREADS, SECTIONS, SectionRouter, section_threads

CHROMIUM = Path("/usr/bin/chromium")

# a control without a name: no aria-label, no label around it or for it, no text (a button), no title
UNNAMED = """(root) => Array.from(root.querySelectorAll("input, select, textarea, button")).filter((el) => {
  const by = (el.getAttribute("aria-labelledby") || "").split(" ").map((i) => document.getElementById(i)).filter(Boolean);
  const around = el.closest("label"), forIt = el.id && document.querySelector(`label[for="${el.id}"]`);
  const text = (x) => (x && x.textContent || "").trim();
  return !((el.getAttribute("aria-label") || "").trim() || by.some((x) => text(x)) || text(around) || text(forIt)
           || (el.tagName === "BUTTON" && text(el)) || (el.title || "").trim());
}).map((el) => el.outerHTML.slice(0, 160))"""

# what each tab shows once it is drawn: a wrong "drawn" (set before the figures) fails these at once
COMPLETE = {
    "elman": "#panel-elman .el-hidden .el-unit",
    "ngrams": "#panel-ngrams .ng-sample[data-ready=true] .ng-sample-text",
    "sampling": "#panel-sampling .smp-bar",
    "feeding": "#panel-feeding .fd-exposure path[data-key=divergence]",
    "gradients": "#panel-gradients .gr-panel[data-t]",
    "classify": "#panel-classify .cls-confusion-box[data-ready=true] table",
    "train": "#panel-train #train-curve svg",
}
COUNTS = {  # elements of which the drawn tab holds exactly this many
    "#panel-ngrams [data-ready=true]": 5,  # histogram, bigrams, pairs, table, sample
    "#panel-sampling [data-ready=true]": 3,  # distribution, continuations, beam tree
    "#panel-feeding .fd-loss path[data-split=val]": 4,  # the four runs compared by default
    "#panel-feeding .fd-exposure path[data-key=divergence]": 4,
    "#panel-gradients .gr-curves path[data-cell]": 3,  # Elman, LSTM, GRU
    "#panel-gradients .gr-panel[data-t]": 3,
    "#panel-classify [data-ready=true]": 2,  # the prefixes' probabilities, the confusion matrix
}
LEGENDS = {"elman": 2, "ngrams": 1, "sampling": 1, "gradients": 1, "classify": 3}  # one per colour scale drawn


@pytest.fixture(scope="module")
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/install-browser")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def test_every_tab_draws_whole_offline_with_named_controls_legends_and_wrapped_text(lab_cache, tmp_path,
                                                                                      browser_page):
    from conftest import LabServer

    with LabServer(lab_cache, "--runs-dir", str(tmp_path / "runs")) as server:
        page = browser_page.new_page(viewport={"width": 900, "height": 900})
        outside, problems = [], []
        page.on("pageerror", lambda e: problems.append(str(e)))

        def only_this_server(route):  # offline: any other host is refused, and noted
            url = urlparse(route.request.url)
            if url.scheme in ("data", "blob") or (url.hostname, url.port) == ("127.0.0.1", server.port):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_this_server)
        page.goto(server.url + "/lab")
        for sid in SECTIONS:
            page.click(f"#tab-{sid}")
            page.wait_for_selector(f"#panel-{sid}[data-drawn]", state="attached", timeout=60_000)
            panel = page.locator(f"#panel-{sid}")
            assert panel.get_attribute("data-drawn") == "1", sid
            assert int(panel.get_attribute("data-drawn-ms")) >= 0
            assert page.locator(COMPLETE[sid]).count() >= 1, f"{sid}: drawn before {COMPLETE[sid]}"
            for sel, n in COUNTS.items():
                if sel.startswith(f"#panel-{sid} "):
                    assert page.locator(sel).count() == n, f"{sel}: {page.locator(sel).count()}, expected {n}"
            errors = [t for t in panel.locator(".lab-error").all_text_contents() if t.strip()]
            assert not errors, (sid, errors)
            assert page.eval_on_selector(f"#panel-{sid}", UNNAMED) == [], sid
            assert panel.locator(".lab-legend").count() >= LEGENDS.get(sid, 0), sid
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{sid} is too wide"

        # long lines and runs of spaces wrap inside their panel: the Elman trace, the gradients' texts
        elman = page.locator("#panel-elman")
        page.click("#tab-elman")
        elman.get_by_label("Text to feed").fill(" " * 120 + "x" * 79)
        elman.get_by_role("button", name="Step").click()
        page.wait_for_function("() => document.querySelector('#panel-elman .el-read').textContent.length === 199"
                               " && document.querySelector('#panel-elman .el-t').textContent === 't = 1'",
                               timeout=30_000)
        page.click("#tab-gradients")
        grads = page.locator("#panel-gradients")
        grads.get_by_label("Text for the connectivity view").fill("x" * 100 + " " * 99)
        grads.get_by_role("button", name="Show").click()
        page.wait_for_function("() => Array.from(document.querySelectorAll('#panel-gradients .gr-panel'))"
                               ".every((p) => p.dataset.t === '197')", timeout=30_000)
        for sid, sel in (("elman", ".el-read"), ("gradients", ".gr-text")):
            page.click(f"#tab-{sid}")
            widths = page.locator(f"#panel-{sid} {sel}").evaluate_all(
                "els => els.map((e) => [e.scrollWidth, e.clientWidth])")
            assert widths and all(scroll <= client + 1 for scroll, client in widths), (sid, widths)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{sid} is too wide"
        page.close()
    assert outside == [], outside
    assert not problems, problems


def test_the_lab_warms_up_in_the_background_and_says_so(lab_cache):
    app = lab_app(lab_cache)
    lab = app.state.lab
    with TestClient(app) as c:  # an application alone does not warm up: rnnlab.serve.serve starts it
        assert c.get("/api/lab/warm-up").json()["state"] == "not started"
        lab.start_warm_up()
        lab._warm_thread.join(timeout=600)
        got = c.get("/api/lab/warm-up").json()
    assert got["state"] == "done" and got["seconds"] >= 0
    steps = got["steps"]
    assert {f"load {n}" for n in ("elman", "lstm", "gru", "digits")} <= steps.keys()
    assert {"ngrams: count the built-in corpus", "feeding: exposure reports", "classify: the digits' test split"} <= \
        steps.keys()
    assert all(isinstance(v, float) for v in steps.values()), steps  # every step ran without an error
    assert "elman" in lab._loaded and "digits" in lab._loaded


def test_section_handlers_compute_on_the_section_threads_and_restore_the_process_count():
    import torch
    from fastapi import FastAPI

    before = torch.get_num_threads()
    seen = {}
    r = SectionRouter()

    @r.get("/threads")
    def threads() -> dict:  # a plain handler: run in the thread pool, wrapped
        seen["in"] = torch.get_num_threads()
        return {}

    app = FastAPI()
    app.include_router(r)
    with TestClient(app) as c:
        assert c.get("/threads").status_code == 200
    assert seen["in"] == SECTION_THREADS
    got = {}

    def other():
        with section_threads():
            got["nested"] = torch.get_num_threads()
        got["after"] = torch.get_num_threads()

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert got["nested"] == SECTION_THREADS and got["after"] == before  # the last one out restores the count
    assert torch.get_num_threads() == before

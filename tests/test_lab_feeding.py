"""The lab's section on how the model is fed (rnnlab.lab.sections.feeding): each run's loss curves against the
points its curves.png draws, eps_i against the strategy its training built, the exposure-bias report against the
library and ``rnnlab exposure``, the samples against ``rnnlab sample``; a model from the command line beside the
lab's; bad parameters are 4xx answers; then the section in chromium draws the API's numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import lab_app, lab_screenshot
from fastapi.testclient import TestClient

from rnnlab.checkpoint import load_model
from rnnlab.cli import main
from rnnlab.config import RunConfig, from_dict
from rnnlab.data.corpus import load_corpus
from rnnlab.exposure import exposure_bias
from rnnlab.feeding import make_feeding
from rnnlab.plots import plot_curves

COMPARED = ["lstm", "free-sample", "scheduled", "professor"]
EXPOSURE = {"prefixes": 3, "prefix_len": 20, "length": 40, "buckets": 4, "temperature": 1.0, "seed": 2}


@pytest.fixture(scope="module")
def given_run(tmp_path_factory, corpus_file_module) -> Path:
    """A language model run from the command line, scheduled sampling with a linear schedule."""
    out = tmp_path_factory.mktemp("given") / "linear-ss"
    assert main(["train", "--data", str(corpus_file_module), "--cell", "gru", "--hidden-size", "8", "--num-layers",
                 "1", "--max-steps", "6", "--eval-interval", "3", "--log-interval", "1", "--batch-size", "4",
                 "--seq-len", "8", "--feeding", "scheduled", "--schedule", "linear", "--schedule-k", "1",
                 "--schedule-c", "0.1", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def corpus_file_module(tmp_path_factory) -> Path:
    from conftest import TEXT

    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def client(lab_cache, given_run, tmp_path_factory) -> TestClient:
    import shutil

    cache = tmp_path_factory.mktemp("feeding") / "cache"
    shutil.copytree(lab_cache, cache)  # the section writes its exposure reports into the cache
    with TestClient(lab_app(cache, [str(given_run)])) as c:
        c.cache = cache  # type: ignore[attr-defined]
        yield c


def test_the_section_compares_the_four_ways_of_feeding_and_the_command_lines_model(client):
    got = client.get("/api/lab/feeding/models").json()
    assert got["default"] == COMPARED
    names = [m["name"] for m in got["models"]]
    assert names[:4] == COMPARED and "linear-ss" in names and "digits" not in names
    assert {m["name"]: m["feeding"] for m in got["models"]}["linear-ss"] == "scheduled"


@pytest.mark.parametrize("name", COMPARED)
def test_loss_curves_are_what_curves_png_draws_and_eps_what_the_strategy_feeds(client, lab_cache, name):
    got = client.post("/api/lab/feeding/run", json={"model": name}).json()
    folder = lab_cache / name
    top = plot_curves(folder / "metrics.jsonl", None, "bpc").axes[0]
    drawn = {line.get_label().split()[0]: np.array(line.get_xydata()) for line in top.get_lines()}
    np.testing.assert_array_equal(np.array(got["train"]), drawn["training"])
    np.testing.assert_array_equal(np.array(got["val"]), drawn["validation"])
    assert got["unit"] == "bpc" and len(got["val"]) >= 1
    cfg = from_dict(RunConfig, json.loads((folder / "config.json").read_text()))
    assert got["feeding"] == cfg.feeding.feeding and got["cell"] == cfg.model.cell == "lstm"
    if name == "professor":
        assert got["schedule"] is None  # teacher-forced loss with a free-running pass beside it: no mixing
        return
    steps, eps = got["schedule"]["steps"], got["schedule"]["eps"]
    assert steps[0] == 0 and steps[-1] == max(s for s, _ in got["train"] + got["val"])
    if name == "scheduled":  # the object the training loop called, from the run's own config
        strategy = make_feeding("scheduled", **cfg.feeding.options())
        assert eps == [strategy.eps(s) for s in steps]
        assert 0 < eps[-1] < 1
    else:
        assert eps == [1.0 if name == "lstm" else 0.0] * len(steps)


def test_a_command_line_runs_linear_schedule(client, given_run):
    got = client.post("/api/lab/feeding/run", json={"model": "linear-ss"}).json()
    assert got["cell"] == "gru" and got["feeding"] == "scheduled" and got["options"]["schedule"] == "linear"
    by_hand = [max(0.0, 1.0 - 0.1 * s) for s in got["schedule"]["steps"]]  # eps_i = max(min, k - c i)
    np.testing.assert_allclose(got["schedule"]["eps"], by_hand, rtol=1e-12)
    assert [s for s, _ in got["val"]] == [3, 6]


def test_the_exposure_report_is_the_librarys_and_the_command_lines_and_is_cached(client, lab_cache, tmp_path,
                                                                                capsys):
    before = set((client.cache / "exposure").glob("*.json"))  # other tests' reports share this cache
    first = client.post("/api/lab/feeding/exposure", json={"model": "scheduled", **EXPOSURE})
    assert first.status_code == 200, first.text
    got = first.json()
    assert got["cached"] is False and got["model"] == "scheduled"
    model, vocab, ckpt = load_model(lab_cache / "scheduled")
    corpus = load_corpus(ckpt.config.data)
    want = exposure_bias(model, vocab, corpus.val, corpus.train, **EXPOSURE)
    for key in ("distance", "teacher_bits", "generated_ref_bits", "real_ref_bits", "divergence", "real_divergence"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
    # the command line gives the same report
    out = tmp_path / "exposure.json"
    assert main(["exposure", str(lab_cache / "scheduled"), "--prefixes", "3", "--prefix-len", "20", "--length", "40",
                 "--buckets", "4", "--seed", "2", "--json-out", str(out)]) == 0
    capsys.readouterr()
    cli = json.loads(out.read_text())
    np.testing.assert_allclose(got["generated_ref_bits"], cli["generated_ref_bits"], rtol=1e-6)
    np.testing.assert_allclose(got["divergence"], cli["divergence"], rtol=1e-6)
    # asked again: from the lab's cache, the same numbers
    again = client.post("/api/lab/feeding/exposure", json={"model": "scheduled", **EXPOSURE}).json()
    assert again["cached"] is True and again["divergence"] == got["divergence"]
    assert len(set((client.cache / "exposure").glob("*.json")) - before) == 1
    other = client.post("/api/lab/feeding/exposure", json={"model": "scheduled", **EXPOSURE, "seed": 3}).json()
    assert other["cached"] is False and other["config"]["seed"] == 3
    for f in (client.cache / "exposure").glob("*.json"):  # a damaged report is measured again, not a 500
        f.write_text('{"config": "damaged"}', encoding="utf-8")
    remeasured = client.post("/api/lab/feeding/exposure", json={"model": "scheduled", **EXPOSURE})
    assert remeasured.status_code == 200 and remeasured.json()["cached"] is False
    assert remeasured.json()["divergence"] == got["divergence"]


def test_a_sample_is_the_text_rnnlab_sample_prints(client, lab_cache, capsys):
    got = client.post("/api/lab/feeding/sample", json={"model": "free-sample", "prime": "def ", "length": 60,
                                                        "seed": 11}).json()
    capsys.readouterr()
    assert main(["sample", str(lab_cache / "free-sample"), "--prime", "def ", "--length", "60", "--seed", "11"]) == 0
    assert got["text"] + "\n" == capsys.readouterr().out
    assert got["text"].startswith("def ") and len(got["text"]) == 64
    other = client.post("/api/lab/feeding/sample", json={"model": "free-sample", "prime": "def ", "length": 60,
                                                          "seed": 12}).json()
    assert other["text"] != got["text"]


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("run", {"model": "nope"}, 404, "no model 'nope'"),
    ("run", {"model": "digits"}, 422, "not a language model"),
    ("run", {"model": 3}, 422, "model"),
    ("run", {"model": "lstm", "extra": 1}, 422, "extra"),
    ("exposure", {"model": "lstm", "prefixes": 0}, 422, "prefixes"),
    ("exposure", {"model": "lstm", "prefixes": 21}, 422, "prefixes"),
    ("exposure", {"model": "lstm", "length": 401}, 422, "length"),
    ("exposure", {"model": "lstm", "buckets": 9, "length": 8}, 422, "buckets (9) cannot exceed length (8)"),
    ("exposure", {"model": "lstm", "temperature": float("nan")}, 422, "temperature"),
    ("sample", {"model": "lstm", "prime": "\u20ac"}, 422, "prime"),
    ("sample", {"model": "lstm", "length": 0}, 422, "length"),
    ("sample", {"model": "lstm", "length": 501}, 422, "length"),
    ("sample", {"model": "lstm", "seed": -1}, 422, "seed"),
    ("sample", {"model": "lstm", "prime": "x" * 201}, 422, "prime"),
])
def test_bad_parameters_are_4xx_with_one_line(client, path, body, status, says):
    r = client.post(f"/api/lab/feeding/{path}", content=json.dumps(body),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert says in r.json()["error"] and "\n" not in r.json()["error"]


def test_a_model_not_trained_yet_is_a_503_with_its_progress(tmp_path):
    with TestClient(lab_app(tmp_path / "empty")) as c:
        r = c.post("/api/lab/feeding/run", json={"model": "scheduled"})
    assert r.status_code == 503 and r.json()["model"] == "scheduled" and "progress" in r.json()


# --- the page, in chromium ------------------------------------------------------------------------------

def test_the_page_draws_each_runs_curves_schedule_exposure_and_sample(lab_cache, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing: run scripts/install-browser")
    import shutil

    import httpx
    from conftest import LabServer

    cache = tmp_path / "cache"
    shutil.copytree(lab_cache, cache)
    with LabServer(cache) as server, sync_api.sync_playwright() as p:
        want = {n: httpx.post(f"{server.url}/api/lab/feeding/run", json={"model": n}, timeout=30).json()
                for n in COMPARED}
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{server.url}/lab#feeding")
            sec = page.locator("#panel-feeding")
            sec.locator(".fd-loss path[data-model='professor'][data-split='val']").wait_for(state="attached", timeout=20000)
            for name in COMPARED:  # the validation curve drawn is the run's metrics
                path = sec.locator(f".fd-loss path[data-model='{name}'][data-split='val']")
                assert json.loads(path.get_attribute("data-points")) == want[name]["val"]
            sched = sec.locator(".fd-schedule path[data-model='scheduled']")
            assert json.loads(sched.get_attribute("data-points")) == [
                list(v) for v in zip(want["scheduled"]["schedule"]["steps"], want["scheduled"]["schedule"]["eps"])]
            assert sec.locator(".fd-schedule path[data-model='professor']").count() == 0
            assert "professor" in sec.locator(".fd-schedule").inner_text()  # says why it has no line
            # the exposure curves arrive when measured (seconds, then cached); the page's settings are the API's
            sec.locator(".fd-exposure path[data-model='lstm'][data-key='divergence']").wait_for(state="attached", timeout=60000)
            settings = json.loads(sec.locator(".fd-exposure").get_attribute("data-settings"))
            report = httpx.post(f"{server.url}/api/lab/feeding/exposure", json={"model": "lstm", **settings},
                                timeout=60).json()
            assert report["cached"] is True
            drawn = json.loads(sec.locator(".fd-exposure path[data-model='lstm'][data-key='divergence']")
                               .get_attribute("data-points"))
            assert drawn == [list(v) for v in zip(report["distance"], report["divergence"])]
            # samples: one per model, the same prime and seed, each the API's text
            sec.get_by_label("Prime").fill("class ")
            sec.get_by_label("Seed").fill("5")
            sec.get_by_role("button", name="Sample").click()
            box = sec.locator(".fd-sample[data-model='scheduled'] .fd-text")
            sync_api.expect(box).to_have_text(re.compile(r"^class "), timeout=20000)
            text = httpx.post(f"{server.url}/api/lab/feeding/sample",
                              json={"model": "scheduled", "prime": "class ", "seed": 5}, timeout=30).json()["text"]
            assert box.text_content() == text
            # long lines wrap inside their panel
            width = sec.locator(".fd-sample[data-model='scheduled']").evaluate("e => [e.scrollWidth, e.clientWidth]")
            assert width[0] <= width[1] + 1
            assert sec.locator(".lab-legend, .fd-key").count() >= 1
            lab_screenshot(page, "feeding")
        finally:
            browser.close()

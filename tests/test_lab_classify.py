"""The lab's sequence classification section: the probabilities after every prefix (each row against the prefix
classified alone), the confusion matrix against ``rnnlab classify eval``, the examples, a command-line text
classifier beside the lab's digits, bad parameters; the section in a real browser."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rnnlab.classify import evaluate_classifier, load_classifier, predict_proba, split_examples_of
from rnnlab.cli import main

DRAWING = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
           [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
           [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]  # the bundled digits' first image: a 0


@pytest.fixture(scope="module")
def names_run(tmp_path_factory):
    from conftest import tiny_names_classifier

    return tiny_names_classifier(tmp_path_factory.mktemp("lab-classify"))


@pytest.fixture(scope="module")
def client(lab_cache, names_run):
    """The lab's server on its tiny models, with a text classifier (names) given on the command line."""
    from conftest import lab_app

    with TestClient(lab_app(lab_cache, [str(names_run)])) as c:
        yield c


def _digits(lab_cache):
    from rnnlab.lab.models import model_dir

    return model_dir(lab_cache, "digits")


def test_the_classifiers_are_listed_with_what_they_read(client):
    r = client.get("/api/lab/classify/classifiers")
    assert r.status_code == 200, r.text
    d = r.json()
    by = {c["name"]: c for c in d["classifiers"]}
    assert by["digits"]["reads"] == "vectors" and by["digits"]["feature_size"] == 8
    assert by["digits"]["classes"] == [str(i) for i in range(10)] and by["digits"]["source"] == "lab"
    assert by["names"]["reads"] == "text" and by["names"]["classes"] == ["Italian", "Russian", "Spanish"]
    assert d["text_classifier"] is True and d["grey_levels"] == 17


def test_without_a_text_classifier_the_section_says_how_to_make_one(lab_cache):
    from conftest import lab_app

    with TestClient(lab_app(lab_cache)) as c:
        d = c.get("/api/lab/classify/classifiers").json()
    assert d["text_classifier"] is False
    assert d["how_to"][0].startswith("rnnlab classify train --data names/ ")
    # the command is real: its options parse
    from rnnlab.cli import build_parser

    args = d["how_to"][0].split("#")[0].split()[1:]
    ns = build_parser().parse_args(args)
    assert ns.data == "names/" and ns.time_budget == 300


def test_every_prefix_of_a_drawing_is_the_digit_classifier_on_those_rows_alone(client, lab_cache):
    vectors = (np.array(DRAWING) / 16).tolist()
    r = client.post("/api/lab/classify/prefixes", json={"model": "digits", "vectors": vectors})
    assert r.status_code == 200, r.text
    d = r.json()
    model, _ = load_classifier(_digits(lab_cache))
    seqs = [np.array(vectors[:t], dtype=np.float32) for t in range(1, 9)]
    np.testing.assert_allclose(d["probs"], predict_proba(model, seqs), atol=1e-6)
    assert d["steps"] == [f"row {i}" for i in range(1, 9)] and d["classes"] == [str(i) for i in range(10)]
    assert d["predicted"] == [str(int(np.argmax(p))) for p in d["probs"]]


def test_every_prefix_of_a_text_is_the_names_classifier_on_that_prefix_alone(client, names_run):
    r = client.post("/api/lab/classify/prefixes", json={"model": "names", "text": "borisov"})
    assert r.status_code == 200, r.text
    d = r.json()
    model, ckpt = load_classifier(names_run)
    seqs = [ckpt.vocab.encode("borisov"[:t]) for t in range(1, 8)]
    np.testing.assert_allclose(d["probs"], predict_proba(model, seqs), atol=1e-6)
    assert d["steps"] == list("borisov")


@pytest.mark.parametrize("split", ["test", "val"])
def test_the_confusion_matrix_is_what_rnnlab_classify_eval_reports(client, lab_cache, capsys, split):
    r = client.post("/api/lab/classify/confusion", json={"model": "digits", "split": split})
    assert r.status_code == 200, r.text
    d = r.json()
    capsys.readouterr()
    assert main(["classify", "eval", str(_digits(lab_cache)), "--split", split, "--json"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["confusion"] == cli["confusion"] and d["examples"] == cli["examples"]
    for k in ("acc", "balanced_acc", "macro_f1", "loss"):
        assert d[k] == pytest.approx(cli[k], rel=1e-12)
    assert d["command"] == f"rnnlab classify eval digits --split {split}"
    assert sum(map(sum, d["confusion"])) == d["examples"]


def test_the_examples_are_the_split_the_confusion_matrix_counts(client, lab_cache, names_run):
    inputs, labels = split_examples_of(_digits(lab_cache), "test")
    r = client.post("/api/lab/classify/example", json={"model": "digits", "split": "test", "index": 3})
    d = r.json()
    assert r.status_code == 200 and d["label"] == labels[3] and d["count"] == len(inputs)
    np.testing.assert_allclose(d["vectors"], inputs[3], atol=1e-7)
    # the labels of the split are those the confusion matrix counts, row by row
    counts = np.bincount([int(x) for x in labels], minlength=10)
    assert np.sum(evaluate_classifier(_digits(lab_cache))["confusion"], axis=1).tolist() == counts.tolist()
    wrapped = client.post("/api/lab/classify/example", json={"model": "digits", "index": len(inputs) + 3}).json()
    assert wrapped["index"] == 3
    text = client.post("/api/lab/classify/example", json={"model": "names", "split": "val"}).json()
    assert isinstance(text["text"], str) and text["label"] in ("Italian", "Russian", "Spanish")


@pytest.mark.parametrize("path, body, status, says", [
    ("prefixes", {"model": "digits", "text": "abc"}, 422, "reads vectors"),
    ("prefixes", {"model": "digits", "vectors": [[0.5] * 7]}, 422, "reads 8 a step"),
    ("prefixes", {"model": "digits", "vectors": []}, 422, "vectors"),
    ("prefixes", {"model": "digits", "vectors": [[0.5] * 8] * 65}, 422, "vectors"),
    ("prefixes", {"model": "digits", "vectors": [[1e300] * 8]}, 422, "not finite or beyond"),
    ("prefixes", {"model": "digits", "vectors": [["a"] * 8]}, 422, "vectors"),
    ("prefixes", {"model": "names", "vectors": [[0.0] * 8]}, 422, "reads text"),
    ("prefixes", {"model": "names", "text": "  "}, 422, "text"),
    ("prefixes", {"model": "names", "text": "ivan\u00e9"}, 422, "text"),
    ("prefixes", {"model": "names", "text": "x" * 501}, 422, "text"),
    ("prefixes", {"model": "lstm", "text": "abc"}, 422, "not a classifier"),
    ("prefixes", {"model": "nope", "text": "abc"}, 404, "nope"),
    ("confusion", {"model": "digits", "split": "train"}, 422, "split"),
    ("confusion", {"model": "digits", "extra": 1}, 422, "extra"),
    ("example", {"model": "digits", "index": -1}, 422, "index"),
])
def test_bad_parameters_are_a_4xx_with_one_line(client, path, body, status, says):
    r = client.post(f"/api/lab/classify/{path}", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert says in err and "\n" not in err


# --- the page, in chromium ------------------------------------------------------------------------------

def test_the_page_draws_the_apis_prefix_probabilities_and_confusion_matrix(lab_cache, names_run):
    from pathlib import Path

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing: run scripts/install-browser")
    import httpx
    from conftest import LabServer, lab_screenshot

    def api(path, **body):
        r = httpx.post(f"{server.url}/api/lab/classify/{path}", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    def shown():
        """The heat map's probabilities, row by row."""
        cells = sec.locator(".cls-heat td.p").evaluate_all("cs => cs.map(c => [Number(c.dataset.step), Number(c.dataset.p)])")
        rows = {}
        for t, p in cells:
            rows.setdefault(t, []).append(p)
        return [rows[t] for t in sorted(rows)]

    ready = "() => document.querySelectorAll('#panel-classify [data-ready=true]').length === 2"
    with LabServer(lab_cache, str(names_run)) as server, sync_api.sync_playwright() as p:
        example = api("example", model="digits", split="test", index=0)
        want = api("prefixes", model="digits", vectors=example["vectors"])
        matrix = api("confusion", model="digits", split="test")
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{server.url}/lab#classify")
            page.wait_for_function(ready, timeout=30000)
            sec = page.locator("#panel-classify")
            # the digits classifier on the test split's first example: the grid holds it, the heat map its prefixes
            levels = sec.locator(".cls-grid button").all_inner_texts()
            np.testing.assert_allclose(np.array(levels, dtype=float).reshape(8, 8) / 16, example["vectors"], atol=1e-6)
            np.testing.assert_allclose(shown(), want["probs"], rtol=1e-12)
            counts = sec.locator(".cls-confusion td.n").evaluate_all("cs => cs.map(c => Number(c.dataset.count))")
            assert np.reshape(counts, (10, 10)).tolist() == matrix["confusion"]
            assert float(sec.locator(".cls-scores").get_attribute("data-acc")) == matrix["acc"]
            assert sec.locator(".lab-legend").count() >= 3  # the pixels, the probabilities, the confusion shares
            # clear, then paint two pixels of row 1 from the keyboard: the heat map follows
            sec.get_by_role("button", name="Clear").click()
            first = sec.locator(".cls-grid button").first
            first.focus()
            page.keyboard.press("Space")
            page.keyboard.press("ArrowRight")
            page.keyboard.press("Space")
            drawn = np.zeros((8, 8))
            drawn[0, :2] = 1.0
            want = api("prefixes", model="digits", vectors=drawn.tolist())
            page.wait_for_function("(p) => { const c = document.querySelector('#panel-classify .cls-heat td.p');"
                                   " return c && Number(c.dataset.p) === p; }", arg=want["probs"][0][0], timeout=10000)
            np.testing.assert_allclose(shown(), want["probs"], rtol=1e-12)
            lab_screenshot(page, "classify")
            # the names classifier given on the command line reads a text box, a row per character
            sec.get_by_label("Classifier").select_option("names")
            page.wait_for_function("() => { const t = document.querySelector('#panel-classify textarea');"
                                   " return t && t.value !== '' && document.querySelector('#panel-classify "
                                   ".cls-heat-box').dataset.ready === 'true'; }", timeout=10000)  # an example shown
            sec.get_by_label("Sequence").fill("borisov")
            want = api("prefixes", model="names", text="borisov")
            page.wait_for_function("(p) => { const rows = document.querySelectorAll('#panel-classify .cls-heat tbody tr');"
                                   " return rows.length === 7 && Number(rows[6].querySelector('td.p').dataset.p) === p; }",
                                   arg=want["probs"][6][0], timeout=10000)
            np.testing.assert_allclose(shown(), want["probs"], rtol=1e-12)
            assert sec.locator(".cls-howto").count() == 0  # a text classifier is here: no how-to
        finally:
            browser.close()

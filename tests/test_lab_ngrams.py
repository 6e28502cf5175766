"""The lab's statistics section (rnnlab.lab.sections.ngrams): its numbers against the command line's
(``rnnlab ngram stats``, ``rnnlab ngram fit`` + ``sample``) and against counts done by hand; bad parameters
are 4xx answers; then the page in chromium draws the API's numbers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import TEXT, lab_app, lab_screenshot
from fastapi.testclient import TestClient

from rnnlab.cli import main
from rnnlab.data.corpus import split_text
from rnnlab.data.vocab import Vocab, tokenize_words
from rnnlab.lab.sections import ngrams

DEAD_END = "ab" * 22 + "c" + "ababa"  # its training split (the first 45 characters) ends in its only "c"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("texts")
    (d / "cats.txt").write_text(TEXT, encoding="utf-8")
    (d / "dead-end.txt").write_text(DEAD_END, encoding="utf-8")
    (d / "one.txt").write_text("a", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def client(tmp_path_factory, data_dir) -> TestClient:
    # no lab model is needed here: an empty cache, and none is trained
    with TestClient(lab_app(tmp_path_factory.mktemp("cache"), data_dir=data_dir)) as c:
        yield c


def _cli_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("level", ["char", "word"])
def test_table_and_pairs_are_the_command_lines(client, data_dir, capsys, level):
    cli = _cli_json(capsys, "ngram", "stats", "--data", str(data_dir / "cats.txt"), "--level", level,
                    "--max-order", "8", "--top", "7", "--json")
    table = client.post("/api/lab/ngrams/table", json={"text": "cats.txt", "level": level}).json()
    assert table["tokens"] == cli["tokens"] and table["vocab_size"] == cli["vocab_size"] and not table["prefix"]
    assert [{k: r[k] for k in ("n", "possible", "observed", "occurrences", "singletons")} for r in table["rows"]] == [
        {k: r[k] for k in ("n", "possible", "observed", "occurrences", "singletons")} for r in cli["table"]]
    stats = client.post("/api/lab/ngrams/stats", json={"text": "cats.txt", "level": level, "pairs_top": 7}).json()
    for key in ("frequent", "asymmetric", "dependent"):
        assert len(stats["pairs"][key]) == len(cli["pairs"][key]) == 7
        for ours, theirs in zip(stats["pairs"][key], cli["pairs"][key]):
            assert ours.keys() == theirs.keys()
            for k, v in theirs.items():
                assert ours[k] == (v if v is None or isinstance(v, str) else pytest.approx(v, rel=1e-12)), (key, k)


def test_histogram_and_bigram_table_against_counts_by_hand(client):
    train, _ = split_text(TEXT, 0.1, "cats")
    words = tokenize_words(train)
    uni = Counter(words)
    got = client.post("/api/lab/ngrams/stats", json={"text": "cats.txt", "level": "word", "top": 4,
                                                     "bigram_top": 3, "points": 20}).json()
    index = Vocab.from_words(words).index
    ranked = sorted(uni, key=lambda w: (-uni[w], index[w]))  # ties: the lower id
    assert got["unigrams"]["symbols"] == ranked[:4] and got["unigrams"]["counts"] == [uni[w] for w in ranked[:4]]
    assert got["unigrams"]["rest"] == len(words) - sum(uni[w] for w in ranked[:4])
    pairs = Counter(zip(words, words[1:]))
    b = got["bigrams"]
    assert b["symbols"] == ranked[:3] and b["counts"] == [[pairs[(x, y)] for y in ranked[:3]] for x in ranked[:3]]
    pts = got["pairs"]["points"]
    assert len(pts["a"]) == min(20, len(pairs))
    assert max(pairs.values()) / (len(words) - 1) == pytest.approx(pts["p_ab"][0])


def test_sample_is_the_command_lines(client, data_dir, tmp_path, capsys):
    out = tmp_path / "cats4.npz"
    assert main(["ngram", "fit", "--data", str(data_dir / "cats.txt"), "--order", "4", "--smoothing",
                 "witten-bell", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["ngram", "sample", str(out), "--length", "300", "--seed", "7", "--temperature", "0.8"]) == 0
    printed = capsys.readouterr().out
    got = client.post("/api/lab/ngrams/sample", json={"text": "cats.txt", "order": 4, "smoothing": "witten-bell",
                                                      "length": 300, "seed": 7, "temperature": 0.8}).json()
    assert printed == got["sample"] + "\n"
    other = client.post("/api/lab/ngrams/sample", json={"text": "cats.txt", "order": 4, "smoothing": "witten-bell",
                                                        "length": 300, "seed": 8, "temperature": 0.8}).json()
    assert other["sample"] != got["sample"]


def test_a_long_text_is_counted_on_a_prefix_and_says_so(client, monkeypatch):
    monkeypatch.setattr(ngrams, "COUNT_CHARS", 500)
    got = ngrams.count_text("cats", TEXT, "char")
    train, _ = split_text(TEXT, 0.1, "cats")
    assert got.describe() == {"text": "cats", "level": "char", "tokens": 500, "vocab_size": len(set(TEXT)),
                              "counted_chars": 500, "train_chars": len(train), "prefix": True}


def test_the_built_in_corpus_is_counted_once(client):
    first = client.post("/api/lab/ngrams/table", json={"text": "builtin", "max_order": 3}).json()
    assert first["prefix"] and first["counted_chars"] == ngrams.COUNT_CHARS and first["train_chars"] > first["counted_chars"]
    again = client.post("/api/lab/ngrams/stats", json={"text": "builtin", "top": 5}).json()
    assert again["tokens"] == first["tokens"] == ngrams.COUNT_CHARS
    assert sum(again["unigrams"]["counts"]) + again["unigrams"]["rest"] == again["tokens"]


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("/api/lab/ngrams/stats", {"text": "nope.txt"}, 404, "no text 'nope.txt'"),
    ("/api/lab/ngrams/stats", {"text": "../etc/passwd"}, 404, "no text"),
    ("/api/lab/ngrams/stats", {"text": "cats.txt", "level": "byte"}, 422, "level"),
    ("/api/lab/ngrams/stats", {"text": "cats.txt", "top": 0}, 422, "top"),
    ("/api/lab/ngrams/stats", {"text": "cats.txt", "points": 10**6}, 422, "points"),
    ("/api/lab/ngrams/stats", {"text": "cats.txt", "colour": "red"}, 422, "colour"),
    ("/api/lab/ngrams/stats", {"text": "one.txt"}, 422, "one.txt"),
    ("/api/lab/ngrams/table", {"text": "cats.txt", "max_order": 9}, 422, "max_order"),
    ("/api/lab/ngrams/table", {"text": 3}, 422, "text"),
    ("/api/lab/ngrams/sample", {"text": "cats.txt", "order": 0}, 422, "order"),
    ("/api/lab/ngrams/sample", {"text": "cats.txt", "seed": -1}, 422, "seed"),
    ("/api/lab/ngrams/sample", {"text": "cats.txt", "temperature": 0}, 422, "temperature"),
    ("/api/lab/ngrams/sample", {"text": "cats.txt", "level": "word", "length": 500}, 422, "at most 200 words"),
    ("/api/lab/ngrams/sample", {"text": "cats.txt", "smoothing": "good-turing"}, 422, "smoothing"),
    ("/api/lab/ngrams/sample", {"text": "dead-end.txt", "order": 2, "smoothing": "mle", "length": 1000}, 422,
     "never followed"),
])
def test_bad_parameters_are_4xx_with_one_line(client, path, body, status, says):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"] and "\n" not in r.json()["error"]


# --- the page, in chromium ------------------------------------------------------------------------------

def test_the_page_draws_the_apis_numbers(data_dir, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing: run scripts/install-browser")
    import httpx
    from conftest import LabServer

    # the section needs no model: an empty lab cache (the page opens on this tab, so no other tab asks for one)
    with LabServer(tmp_path / "cache", "--data-dir", str(data_dir)) as server, sync_api.sync_playwright() as p:
        want = {k: httpx.post(f"{server.url}/api/lab/ngrams/{k}", json={"text": "cats.txt", **body}, timeout=30).json()
                for k, body in (("stats", {}), ("table", {}), ("sample", {"order": 5, "seed": 3}))}
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{server.url}/lab#ngrams")
            sec = page.locator("#panel-ngrams")
            sec.get_by_label("Text", exact=True).select_option("cats.txt")
            sec.locator("[data-ready=true]").first.wait_for(timeout=15000)
            page.wait_for_function("() => document.querySelectorAll('#panel-ngrams [data-ready=true]').length >= 4",
                                   timeout=15000)
            # the histogram's bars carry their counts; the first is the most frequent symbol's
            bars = sec.locator(".ng-unigrams [data-count]")
            assert bars.first.get_attribute("data-symbol") == want["stats"]["unigrams"]["symbols"][0]
            assert int(bars.first.get_attribute("data-count")) == want["stats"]["unigrams"]["counts"][0]
            # the table's observed column is the API's (and so the command line's)
            observed = [int(t.replace(",", "")) for t in sec.locator(".ng-table td.observed").all_inner_texts()]
            assert observed == [r["observed"] for r in want["table"]["rows"]]
            assert sec.locator(".ng-bigrams .lab-legend").count() == 1
            assert sec.locator(".ng-scatter circle").count() >= 2 * min(len(want["stats"]["pairs"]["points"]["a"]), 50)
            # the slider at order 5 and seed 3 gives the API's sample for them
            sec.get_by_label("Seed").fill("3")
            sec.get_by_label("Order n").evaluate("el => { el.value = '5'; el.dispatchEvent(new Event('input')); }")
            sec.get_by_role("button", name="Sample").click()
            page.wait_for_function("(want) => document.querySelector('#panel-ngrams .ng-sample-text').textContent === want",
                                   arg=want["sample"]["sample"], timeout=15000)
            lab_screenshot(page, "ngrams")
        finally:
            browser.close()

"""The lab's sampling section: the next-token distribution, the continuations side by side and the beam search
tree, each against the library and the command line (``rnnlab sample``) on the same model; bad parameters;
the section in a real browser."""

from __future__ import annotations

import itertools
import shlex

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from rnnlab.cli import main
from rnnlab.config import ModelConfig, SampleConfig
from rnnlab.data.vocab import Vocab
from rnnlab.decoding import distribution, log_softmax
from rnnlab.nn.models import RNNLanguageModel
from rnnlab.sampling import beam_tree, generate, next_token_logits, sample_steps

PRIME = "def f(x):\n    return "


# the library: the next token's logits and the beam search tree of a model --------------------------

@pytest.fixture(scope="module")
def tiny_model() -> tuple[RNNLanguageModel, Vocab]:
    torch.manual_seed(3)
    vocab = Vocab.from_text("ab c\n")
    model = RNNLanguageModel(ModelConfig(cell="lstm", hidden_size=8, num_layers=2, embedding_size=4, dropout=0.0),
                             len(vocab)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)  # sharper distributions: the hypotheses' scores differ clearly
    return model, vocab


def test_the_next_token_logits_are_what_sampling_draws_its_first_token_from(tiny_model):
    model, vocab = tiny_model
    z = next_token_logits(model, vocab, "ab c")
    _, first = next(sample_steps(model, vocab, SampleConfig(prime="ab c", length=3, seed=0)))
    np.testing.assert_allclose(z, first[0], rtol=1e-12)
    # an oracle: the last position of one plain forward pass over the prime
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(vocab.encode("ab c"))[None], model.initial_state(1))
    np.testing.assert_allclose(z, logits[0, -1].double().numpy(), rtol=1e-5, atol=1e-6)


def _sequence_logprobs(model, vocab, prime, seqs):
    """log p(seq | prime) of every seq (N, L), by one batched forward pass over prime + seq: the exhaustive
    search's scores (N,)."""
    p = len(vocab.encode(prime))
    ids = np.concatenate([np.tile(vocab.encode(prime), (len(seqs), 1)), seqs], axis=1)  # (N, P + L)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids), model.initial_state(len(seqs)))  # (N, P + L, V)
    lp = log_softmax(logits.double().numpy())[:, p - 1:-1]  # (N, L, V): the scores of each next token
    return np.take_along_axis(lp, seqs[:, :, None], axis=2)[:, :, 0].sum(axis=1)


def test_a_beam_as_wide_as_every_continuation_finds_the_exact_best_of_the_model(tiny_model):
    """Width |V|^L on a model of 5 symbols, L = 3: the tree's best path is the best of all 125 continuations
    scored by the model, and its score is that continuation's log probability."""
    model, vocab = tiny_model
    v, length = len(vocab), 3
    cfg = SampleConfig(strategy="beam", prime="ab", length=length, beam_width=v ** length)
    tree = beam_tree(model, vocab, cfg, pruned=2)
    seqs = np.array(list(itertools.product(range(v), repeat=length)))  # (V^L, L)
    scores = dict(zip(map(tuple, seqs.tolist()), _sequence_logprobs(model, vocab, "ab", seqs)))
    best = max(scores, key=scores.get)
    assert tuple(tree.tokens) == best
    assert [tree.steps[t].kept[i].token for t, i in enumerate(tree.best)] == list(best)
    np.testing.assert_allclose(tree.score, scores[best], atol=1e-5)
    assert len(tree.steps[-1].kept) == v ** length  # every continuation kept
    np.testing.assert_allclose(sorted((n.score for n in tree.steps[-1].kept), reverse=True),
                               sorted(scores.values(), reverse=True), atol=1e-5)


def test_the_tree_of_a_narrow_beam_is_the_search_generate_runs(tiny_model):
    model, vocab = tiny_model
    cfg = SampleConfig(strategy="beam", prime="a", length=6, beam_width=2)
    tree = beam_tree(model, vocab, cfg, pruned=3)
    assert "a" + vocab.decode(tree.tokens) == generate(model, vocab, cfg)[0]
    assert all(len(s.kept) == 2 for s in tree.steps) and len(tree.steps) == 6
    assert all(min(n.score for n in s.kept) >= max(n.score for n in s.pruned) for s in tree.steps)


# the section's API ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab_client(lab_cache):
    """The lab's server (its models tiny) as a test client, and the lab's cache folder."""
    from conftest import lab_app

    with TestClient(lab_app(lab_cache)) as client:
        yield client, lab_cache


def _cli(capsys, command: str, run) -> str:
    """What the command line the page shows writes, with the lab's run folder in the place of its name."""
    args = shlex.split(command)
    assert args[:3] == ["rnnlab", "sample", "lstm"]
    capsys.readouterr()
    assert main(["sample", str(run), *args[3:]]) == 0
    return capsys.readouterr().out


def test_the_distribution_is_the_librarys_and_the_draw_is_the_first_token_rnnlab_sample_writes(lab_client, capsys):
    client, cache = lab_client
    from rnnlab.lab.models import model_dir

    body = {"model": "lstm", "prime": PRIME, "temperature": 0.7, "top_k": 6, "top_p": 0.8, "seed": 11, "bars": 10}
    r = client.post("/api/lab/sampling/distribution", json=body)
    assert r.status_code == 200, r.text
    d = r.json()
    from rnnlab.checkpoint import load_model

    model, vocab, _ = load_model(model_dir(cache, "lstm"))
    z = next_token_logits(model, vocab, PRIME)
    order = np.argsort(-z, kind="stable")
    assert [t["id"] for t in d["tokens"]] == order[:10].tolist()
    for key, (t, k, p) in {"p_model": (1.0, 0, 1.0), "p_temp": (0.7, 0, 1.0), "p": (0.7, 6, 0.8)}.items():
        want = distribution(z, t, k, p)[0]
        np.testing.assert_allclose([x[key] for x in d["tokens"]], want[order[:10]], rtol=1e-9)
        np.testing.assert_allclose(d["rest"][key], want[order[10:]].sum(), rtol=1e-9, atol=1e-15)
    assert d["kept"] == int((distribution(z, 0.7, 6, 0.8)[0] > 0).sum()) <= 6
    assert [t["kept"] for t in d["tokens"]] == [t["p"] > 0 for t in d["tokens"]]
    assert d["argmax"]["id"] == int(z.argmax())
    out = _cli(capsys, d["draw"]["command"], model_dir(cache, "lstm"))
    assert out == PRIME + d["draw"]["text"] + "\n"
    assert order[d["draw"]["rank"]] == d["draw"]["id"]
    # another seed, another draw from the same distribution: the command line follows it too
    draws = {client.post("/api/lab/sampling/distribution", json={**body, "seed": s}).json()["draw"]["id"]
             for s in range(12)}
    assert len(draws) > 1 and all(distribution(z, 0.7, 6, 0.8)[0][i] > 0 for i in draws)


def test_each_continuation_is_the_text_rnnlab_sample_writes_with_its_options(lab_client, capsys):
    client, cache = lab_client
    from rnnlab.lab.models import model_dir

    r = client.post("/api/lab/sampling/continuations",
                    json={"prime": PRIME, "length": 40, "temperature": 0.9, "top_k": 4, "top_p": 0.7,
                          "beam_width": 3, "seed": 5})
    assert r.status_code == 200, r.text
    runs = r.json()["continuations"]
    assert [c["strategy"] for c in runs] == ["argmax", "temperature", "top-k", "top-p", "beam"]
    for c in runs:
        assert c["text"] == PRIME + c["continuation"] and len(c["continuation"]) == 40
        assert _cli(capsys, c["command"], model_dir(cache, "lstm")) == c["text"] + "\n", c["strategy"]
    assert "--top-k 4" in runs[2]["command"] and "--top-p 0.7" in runs[3]["command"]
    assert "--beam-width 3" in runs[4]["command"]


def test_the_beam_tree_answer_is_the_library_tree_and_the_command_lines_beam(lab_client, capsys):
    client, cache = lab_client
    from rnnlab.checkpoint import load_model
    from rnnlab.lab.models import model_dir

    r = client.post("/api/lab/sampling/beam", json={"prime": PRIME, "beam_width": 3, "length": 5, "pruned": 2})
    assert r.status_code == 200, r.text
    d = r.json()
    model, vocab, _ = load_model(model_dir(cache, "lstm"))
    tree = beam_tree(model, vocab, SampleConfig(strategy="beam", prime=PRIME, length=5, beam_width=3), pruned=2)
    assert len(d["steps"]) == 5 and d["best"] == tree.best
    for got, want in zip(d["steps"], tree.steps):
        assert [(n["parent"], n["token"]) for n in got["kept"]] == [(n.parent, n.token) for n in want.kept]
        np.testing.assert_allclose([n["score"] for n in got["kept"]], [n.score for n in want.kept], rtol=1e-9)
        assert [n["token"] for n in got["pruned"]] == [n.token for n in want.pruned]
    assert "".join(d["tokens"]) == d["continuation"]
    assert _cli(capsys, d["command"], model_dir(cache, "lstm")) == PRIME + d["continuation"] + "\n"


def test_an_empty_prime_starts_where_rnnlab_sample_starts(lab_client, capsys):
    client, cache = lab_client
    from rnnlab.lab.models import model_dir

    d = client.post("/api/lab/sampling/distribution", json={"prime": "", "seed": 2}).json()
    assert "--prime" not in d["draw"]["command"]
    assert _cli(capsys, d["draw"]["command"], model_dir(cache, "lstm")) == d["draw"]["text"] + "\n"
    b = client.post("/api/lab/sampling/beam", json={"prime": "", "length": 4}).json()
    assert _cli(capsys, b["command"], model_dir(cache, "lstm")) == b["continuation"] + "\n"


@pytest.mark.parametrize("path, body, status, says", [
    ("distribution", {"temperature": 0}, 422, "temperature"),
    ("distribution", {"top_p": 0}, 422, "top_p"),
    ("distribution", {"top_k": -1}, 422, "top_k"),
    ("distribution", {"bars": 0}, 422, "bars"),
    ("distribution", {"seed": -3}, 422, "seed"),
    ("distribution", {"temperature": "hot"}, 422, "temperature"),
    ("distribution", {"colour": "red"}, 422, "colour"),
    ("distribution", {"prime": "\u00e9\u00e9"}, 422, "prime"),
    ("distribution", {"prime": "x" * 2001}, 422, "prime"),
    ("distribution", {"model": "nope"}, 404, "nope"),
    ("distribution", {"model": "digits"}, 422, "not a language model"),
    ("continuations", {"length": 0}, 422, "length"),
    ("continuations", {"length": 401}, 422, "length"),
    ("continuations", {"beam_width": 17}, 422, "beam_width"),
    ("continuations", {"top_k": 0}, 422, "top_k"),
    ("beam", {"beam_width": 9}, 422, "beam_width"),
    ("beam", {"length": 31}, 422, "length"),
    ("beam", {"pruned": 6}, 422, "pruned"),
    ("beam", {"model": 3}, 422, "model"),
])
def test_bad_parameters_are_a_4xx_with_one_line(lab_client, path, body, status, says):
    client, _ = lab_client
    r = client.post(f"/api/lab/sampling/{path}", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert says in err and "\n" not in err and "Traceback" not in err


def test_a_lab_model_not_trained_yet_is_a_503_with_its_progress(tmp_path):
    from conftest import lab_app

    with TestClient(lab_app(tmp_path / "empty-cache")) as client:
        r = client.post("/api/lab/sampling/distribution", json={"prime": "def"})
    assert r.status_code == 503 and r.json()["model"] == "lstm" and "not ready" in r.json()["error"]
    assert "state" in r.json()["progress"]


# --- the page, in chromium ------------------------------------------------------------------------------

def test_the_page_draws_the_apis_distribution_continuations_and_tree(lab_cache):
    from pathlib import Path

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing: run scripts/install-browser")
    import httpx
    from conftest import LabServer, lab_screenshot

    page_prime = "    def __init__(self"  # what the page starts with

    def api(path, **body):
        r = httpx.post(f"{server.url}/api/lab/sampling/{path}", json={"prime": page_prime, **body}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    with LabServer(lab_cache) as server, sync_api.sync_playwright() as p:
        dist = api("distribution", bars=40)
        cont = api("continuations", length=120, temperature=1.0, top_k=5, top_p=0.9, beam_width=5, seed=0)
        beam = api("beam", beam_width=3, length=8, pruned=2)
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        ready = "() => document.querySelectorAll('#panel-sampling [data-ready=true]').length === 3"
        try:
            page.goto(f"{server.url}/lab#sampling")
            page.wait_for_function(ready, timeout=20000)
            sec = page.locator("#panel-sampling")
            bars = sec.locator(".smp-bar")
            assert [int(b) for b in bars.evaluate_all("bs => bs.map(b => b.dataset.id)")] == [t["id"] for t in dist["tokens"]]
            assert sec.locator(".smp-bar[data-argmax=true]").get_attribute("data-id") == str(dist["argmax"]["id"])
            np.testing.assert_allclose([float(v) for v in bars.evaluate_all("bs => bs.map(b => b.dataset.pTemp)")],
                                       [t["p_temp"] for t in dist["tokens"]], rtol=1e-12)
            # the continuations are the API's (and so rnnlab sample's) texts, side by side
            for c in cont["continuations"]:
                card = sec.locator(f".smp-card[data-strategy={c['strategy']}]")
                assert card.locator(".smp-continuation").text_content() == c["continuation"]
                assert card.locator(".smp-command").text_content() == "$ " + c["command"]
            # the tree: every kept and pruned node, the best path spelling the beam's continuation
            nodes = sec.locator(".smp-node")
            assert sec.locator(".smp-node[data-kind=kept]").count() == sum(len(s["kept"]) for s in beam["steps"])
            assert sec.locator(".smp-node[data-kind=pruned]").count() == sum(len(s["pruned"]) for s in beam["steps"])
            best = nodes.locator("xpath=.").evaluate_all(
                "ns => ns.filter(n => n.dataset.best === 'true').map(n => [Number(n.dataset.step), n.dataset.token])")
            assert "".join(t for _, t in sorted(best)) == beam["continuation"]
            assert sec.locator(".lab-legend").count() >= 1
            # the temperature slider redraws the distribution at that temperature; top-k greys the cut tokens
            sec.get_by_label("Temperature", exact=True).evaluate("el => { el.value = '0.5'; el.dispatchEvent(new Event('input')); }")
            sec.get_by_label("Top-k (0: all)").fill("3")
            sec.get_by_label("Top-k (0: all)").dispatch_event("change")
            want = api("distribution", temperature=0.5, top_k=3, bars=40)
            page.wait_for_function("() => document.querySelectorAll('#panel-sampling .smp-bar[data-kept=true]').length === 3",
                                   timeout=10000)
            np.testing.assert_allclose([float(v) for v in bars.evaluate_all("bs => bs.map(b => b.dataset.p)")],
                                       [t["p"] for t in want["tokens"]], rtol=1e-12)
            # Draw: the next seed's draw from the shown distribution
            sec.get_by_role("button", name="Draw").click()
            drawn = api("distribution", temperature=0.5, top_k=3, seed=1, bars=40)["draw"]
            page.wait_for_function("(id) => { const b = document.querySelector('#panel-sampling .smp-bar[data-drawn=true]');"
                                   " return b && b.dataset.id === id && document.querySelector('#panel-sampling .lab-status')"
                                   ".textContent.includes('seed 1'); }", arg=str(drawn["id"]), timeout=10000)
            lab_screenshot(page, "sampling")
            # a prime of 300 spaces wraps inside its card: nothing overflows to the right
            sec.get_by_label("Prime").fill(" " * 300 + "def")
            page.wait_for_function("() => { const p = document.querySelector('#panel-sampling .smp-prime');"
                                   " return p && p.textContent.length === 303 && document.querySelector("
                                   "'#panel-sampling .smp-continuations').dataset.ready === 'true'; }", timeout=15000)
            widths = sec.locator(".smp-card .lab-text").evaluate_all("ts => ts.map(t => [t.scrollWidth, t.clientWidth])")
            assert len(widths) == 5 and all(scroll <= client + 1 for scroll, client in widths), widths
        finally:
            browser.close()

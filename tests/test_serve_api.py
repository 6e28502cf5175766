"""The server's JSON API: every endpoint, against the library as oracle (rnnlab.sampling for the
streamed text, the model's softmax for the scores, the cells for the gates), and every bad input
answered with a clear 4xx, never a 500."""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from anyio.from_thread import start_blocking_portal
from safetensors.torch import save_file

from rnnlab.checkpoint import load_model
from rnnlab.config import DataConfig, ModelConfig, OptimConfig, RunConfig, SampleConfig, TrainConfig
from rnnlab.errors import CheckpointError
from rnnlab.sampling import generate
from rnnlab.serve import LOADERS, MAX_BODY_BYTES, MAX_LENGTH, MAX_PRIME_CHARS, MAX_TEXT_CHARS, ServedModel, build_app
from rnnlab.train import train

SNIPPET = "the cat sat on the mat.\nthe dog sat on the log.\na cat and a dog met"


def tiny_run(corpus: Path, out: Path, cell: str, layers: int) -> Path:
    """A few training steps of a 16-unit model: enough for a real checkpoint, in about a second."""
    cfg = RunConfig(data=DataConfig(data=str(corpus)),
                    model=ModelConfig(cell=cell, hidden_size=16, num_layers=layers, dropout=0.0, embedding_size=8),
                    optim=OptimConfig(lr=1e-2),
                    train=TrainConfig(batch_size=4, seq_len=16, max_steps=6, eval_interval=6, log_interval=3, seed=1,
                                      out=str(out)))
    train(cfg, progress=False)
    return out


class Api:
    """httpx.AsyncClient on the app through ASGITransport, called from synchronous tests."""

    def __init__(self, app):
        self._portal_cm = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")

    def get(self, url: str, **kw) -> httpx.Response:
        return self.portal.call(partial(self.client.get, url, **kw))

    def post(self, url: str, **kw) -> httpx.Response:
        return self.portal.call(partial(self.client.post, url, **kw))

    def close(self) -> None:
        self.portal.call(self.client.aclose)
        self._portal_cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from conftest import TEXT

    d = tmp_path_factory.mktemp("serve")
    (d / "corpus.txt").write_text(TEXT, encoding="utf-8")
    return {"lstm": tiny_run(d / "corpus.txt", d / "lstm", "lstm", 2),
            "gru": tiny_run(d / "corpus.txt", d / "gru", "gru", 1)}


@pytest.fixture(scope="module")
def api(runs):
    a = Api(build_app([str(runs["lstm"]), str(runs["gru"] / "best.safetensors")]))
    yield a
    a.close()


def lines(resp: httpx.Response) -> list[dict]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in resp.text.splitlines()]


def assert_error(resp: httpx.Response, status: int, *words: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    for w in words:
        assert w in body["error"], (w, body["error"])
    return body


# --- models -------------------------------------------------------------------------------------
def test_models_are_listed_by_index_and_name_and_no_path_is_shown(api, runs):
    models = api.get("/api/models").json()
    assert [m["name"] for m in models] == ["lstm", "gru"] and [m["index"] for m in models] == [0, 1]
    lstm, gru = models
    assert (lstm["kind"], lstm["cell"], lstm["num_layers"], lstm["hidden_size"]) == ("language-model", "lstm", 2, 16)
    assert (gru["cell"], gru["num_layers"]) == ("gru", 1)
    assert lstm["quantities"] == ["h", "c", "i", "f", "g", "o"] and gru["quantities"] == ["h", "r", "z", "n"]
    assert lstm["bounds"]["c"] is None and lstm["bounds"]["f"] == [0.0, 1.0]
    _, vocab, _ = load_model(runs["lstm"])
    assert lstm["vocab_size"] == len(vocab) and lstm["file"] == "best.safetensors"
    assert str(runs["lstm"].parent) not in json.dumps(models)  # no folder reaches the client
    for ref in (0, "lstm"):
        detail = api.get(f"/api/models/{ref}").json()
        assert detail["name"] == "lstm" and detail["symbols"] == vocab.symbols


@pytest.mark.parametrize("ref", [2, -1, 10**12, "nope", "../../etc/passwd", "/etc/passwd", "..", "lstm/../gru",
                                 "C:\\Windows\\win.ini", "0x1", "²", "", " 0", "00"])
def test_unknown_and_path_like_models_are_404(api, runs, ref):
    for path, body in (("/api/generate", {"length": 1}), ("/api/score", {"text": "the cat"}),
                       ("/api/activations", {"text": "the cat"})):
        assert_error(api.post(path, json={"model": ref, **body}), 404, "no model")
    if isinstance(ref, str) and "/" not in ref and ref:  # in a URL: 404, with the message unless it is a dot segment
        assert_error(api.get(f"/api/models/{ref}"), 404, *(() if ref.startswith(".") else ("no model",)))
    assert_error(api.get(f"/api/models/{runs['lstm']}"), 404)  # a real path is not a model name either


@pytest.mark.parametrize("path", ["/etc/passwd", "/../../etc/passwd", "/static/../../etc/passwd", "/web/index.html",
                                  "/rnnlab/serve.py", "/api/models/..%2F..%2Fetc%2Fpasswd", "/%2e%2e/%2e%2e/etc/passwd",
                                  "/best.safetensors", "/api/models/0/../../../etc/passwd"])
def test_no_file_is_reachable(api, path):
    resp = api.get(path)
    assert resp.status_code == 404 and "root:" not in resp.text


# --- generate --------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [
    {"strategy": "argmax", "prime": "the cat"},
    {"strategy": "sample", "temperature": 0.7, "seed": 3, "prime": "the cat "},
    {"strategy": "sample", "top_k": 3, "seed": 1, "prime": ""},
    {"strategy": "sample", "top_p": 0.8, "temperature": 1.3, "seed": 2, "prime": "a dog"},
])
def test_streamed_generation_equals_rnnlab_sampling(api, runs, settings):
    length = 60
    events = lines(api.post("/api/generate", json={"model": "lstm", "length": length, **settings}))
    start, tokens, end = events[0], events[1:-1], events[-1]
    assert start["type"] == "start" and start["prime"] == settings["prime"] and start["model"] == "lstm"
    assert [e["type"] for e in tokens] == ["token"] * length and [e["i"] for e in tokens] == list(range(length))
    model, vocab, _ = load_model(runs["lstm"])
    expected = generate(model, vocab, SampleConfig(length=length, **{**settings, "seed": start["seed"]}))[0]
    assert end == {"type": "end", "text": expected, "generated": length}
    assert settings["prime"] + "".join(e["text"] for e in tokens) == expected
    # each token carries the model's own next-character distribution at that step (recomputed here
    # in one teacher-forced pass over the prime and the generated text)
    context = settings["prime"] or "\n"
    ids = torch.as_tensor(vocab.encode(context + expected[len(settings["prime"]):]))
    with torch.no_grad():
        p = torch.softmax(model(ids.unsqueeze(0))[0][0].double(), dim=-1).numpy()  # (N, V)
    for k, e in enumerate(tokens):
        dist = p[len(context) - 1 + k]
        assert e["id"] == vocab.index[e["text"]] and e["p"] == pytest.approx(dist[e["id"]], rel=1e-5)
        top = e["top"]
        assert len(top) == 5 and [c["text"] for c in top] == [vocab.symbols[i] for i in np.argsort(-dist, kind="stable")[:5]]
        assert [c["p"] for c in top] == pytest.approx(sorted(dist, reverse=True)[:5], rel=1e-5)
        assert sum(c["p"] for c in top) <= 1 + 1e-9
    if settings["strategy"] == "argmax":
        assert all(e["text"] == e["top"][0]["text"] for e in tokens)


def test_a_rounds_tokens_are_one_write_of_one_line_each(runs):
    """The scheduler hands a stream a round's tokens at once: their lines, numbered on from the tokens before, go
    into the buffer as one write (one wake-up of the event loop, one chunk on the wire)."""
    from rnnlab.serve import Registry, _Generation

    entry = Registry.load([str(runs["lstm"])]).language_model("lstm")
    v = len(entry.vocab)
    loop = asyncio.new_event_loop()
    try:
        gen = _Generation(entry, SampleConfig(prime="the", length=9, seed=1), 3, loop)
        probs = np.random.default_rng(0).dirichlet(np.ones(v), size=(2, 4))  # (rounds, n, V)
        tokens = np.array([[1, 2, 3, 4], [5, 6, 7, 8]]) % v
        for k in range(2):
            gen.deliver_many(tokens[k], probs[k])
            assert len(gen._buf) == k + 1 and gen.done == 4 * (k + 1)
    finally:
        loop.close()
    got = [json.loads(x) for chunk in gen._buf for x in chunk.decode().splitlines()]
    assert [e["i"] for e in got] == list(range(8)) and [e["id"] for e in got] == tokens.ravel().tolist()
    for e, p in zip(got, probs.reshape(8, v)):
        assert e["p"] == p[e["id"]] and e["text"] == entry.vocab.symbols[e["id"]]
        assert [c["text"] for c in e["top"]] == [entry.vocab.symbols[i] for i in np.argsort(-p, kind="stable")[:3]]
        assert [c["p"] for c in e["top"]] == sorted(p, reverse=True)[:3]


def test_lines_go_out_first_at_once_then_by_count_or_time_and_a_round_wakes_the_loop_once(runs, monkeypatch):
    """The write policy: the start line with the first token at once, then a write when FLUSH_TOKENS lines wait or
    FLUSH_SECONDS after the last write, the end at once; the rounds' hand-overs to many streams are one wake-up
    of the event loop (the scheduler's thread puts, the loop drains)."""
    import threading

    import rnnlab.serve as serve_mod
    from rnnlab.serve import Registry, _Generation

    monkeypatch.setattr(serve_mod, "FLUSH_TOKENS", 4)
    monkeypatch.setattr(serve_mod, "FLUSH_SECONDS", 60.0)
    entry = Registry.load([str(runs["lstm"])]).language_model("lstm")
    v = len(entry.vocab)
    probs = np.full((1, v), 1.0 / v)
    loop = asyncio.new_event_loop()
    wakeups = []
    real = loop.call_soon_threadsafe
    loop.call_soon_threadsafe = lambda *a: (wakeups.append(a), real(*a))[1]  # counted

    async def scenario():
        gens = [_Generation(entry, SampleConfig(prime="the", length=10, seed=k), 2, loop, head=b"start\n")
                for k in range(3)]
        writes: list[list[bytes]] = [[] for _ in gens]

        async def drain(k):
            async for chunk in gens[k].drain():
                writes[k].append(chunk)

        tasks = [asyncio.create_task(drain(k)) for k in range(3)]
        await asyncio.sleep(0.05)  # every drain waits

        def put(k: int, n: int) -> None:  # as the scheduler's thread hands over a round
            t = threading.Thread(target=lambda: [gens[j].deliver_many(np.ones(n, dtype=np.int64),
                                                                      np.repeat(probs, n, axis=0)) for j in k])
            t.start()
            t.join()
            return None

        async def settle():
            for _ in range(20):
                await asyncio.sleep(0.01)

        put(range(3), 1)  # the first token: out at once, with the start line, one wake-up for the three
        await settle()
        assert [len(w) for w in writes] == [1, 1, 1] and len(wakeups) == 1
        assert all(w[0].startswith(b"start\n") and w[0].count(b"\n") == 2 for w in writes)
        put(range(3), 1)
        put(range(3), 2)  # 3 lines wait: under FLUSH_TOKENS
        await settle()
        assert [len(w) for w in writes] == [1, 1, 1]
        put(range(3), 1)  # the fourth: one write of four lines each
        await settle()
        assert [len(w) for w in writes] == [2, 2, 2] and all(w[1].count(b"\n") == 4 for w in writes)
        serve_mod.FLUSH_SECONDS = 1e-9  # now every line is due by time
        put([0], 1)
        await settle()
        assert [len(w) for w in writes] == [3, 2, 2]
        serve_mod.FLUSH_SECONDS = 60.0
        put([1], 3)
        await settle()
        assert len(writes[1]) == 2
        gens[1].finish()  # the end line goes out at once, with what waits before it
        await settle()
        assert writes[1][-1].endswith(b'"generated":8}\n') and writes[1][-1].count(b"\n") == 4
        serve_mod.FLUSH_SECONDS = 0.2  # the streams' timed writes fall in the same periods: one wake-up for both
        await asyncio.sleep(0.2 - time.monotonic() % 0.2 + 0.02)
        before = len(wakeups)
        put([0, 2], 1)
        await settle()
        assert [len(w) for w in (writes[0], writes[2])] == [4, 3] and len(wakeups) == before + 1
        for g in gens:
            g.cancel()
            g.fail("stop")
        await asyncio.gather(*tasks)
        return writes

    try:
        writes = loop.run_until_complete(scenario())
    finally:
        loop.close()
    got = [json.loads(x) for x in b"".join(writes[1]).decode().splitlines()[1:-1]]
    assert [e["i"] for e in got] == list(range(8)) and all(e["type"] == "token" for e in got)


def test_an_unseeded_sample_reports_its_seed_and_repeats_with_it(api):
    a = lines(api.post("/api/generate", json={"prime": "the", "length": 40}))
    b = lines(api.post("/api/generate", json={"prime": "the", "length": 40, "seed": a[0]["seed"]}))
    assert a[-1]["text"] == b[-1]["text"] and a[0]["seed"] == b[0]["seed"]
    c = lines(api.post("/api/generate", json={"prime": "the", "length": 40, "seed": a[0]["seed"] + 1}))
    assert c[-1]["text"] != a[-1]["text"]


def test_zero_length_and_the_largest_prime_are_fine(api):
    assert [e["type"] for e in lines(api.post("/api/generate", json={"length": 0}))] == ["start", "end"]
    prime = (SNIPPET * 100)[:MAX_PRIME_CHARS]
    events = lines(api.post("/api/generate", json={"prime": prime, "length": 3, "top": 0, "model": 1}))
    assert events[-1]["text"].startswith(prime) and all(e["top"] == [] for e in events[1:-1])


# --- score ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_scored_probabilities_are_the_models_softmax(api, runs, model):
    answer = api.post("/api/score", json={"model": model, "text": SNIPPET, "top": 5}).json()
    m, vocab, _ = load_model(runs[model])
    ids = vocab.encode(SNIPPET)
    with torch.no_grad():
        p = torch.softmax(m(torch.as_tensor(ids).unsqueeze(0))[0][0].double(), dim=-1).numpy()  # (N, V)
    want = p[np.arange(len(ids) - 1), ids[1:]]
    assert answer["tokens"] == list(SNIPPET) and answer["unit"] == "bpc"
    assert answer["prob"][0] is None and answer["bits"][0] is None and answer["top"][0] is None
    np.testing.assert_allclose(answer["prob"][1:], want, rtol=1e-12)
    bits = -np.log2(want)
    np.testing.assert_allclose(answer["bits"][1:], bits, rtol=1e-9)
    np.testing.assert_allclose(answer["running_bits"][1:], np.cumsum(bits) / np.arange(1, len(bits) + 1), rtol=1e-9)
    assert answer["mean_bits"] == pytest.approx(bits.mean(), rel=1e-9)
    for t in (1, 17, len(ids) - 1):
        assert [c["p"] for c in answer["top"][t]] == pytest.approx(sorted(p[t - 1], reverse=True)[:5], rel=1e-12)


def test_one_character_has_nothing_to_predict(api):
    answer = api.post("/api/score", json={"text": "t"}).json()
    assert answer["tokens"] == ["t"] and answer["prob"] == [None] and answer["mean_bits"] is None


# --- activations ------------------------------------------------------------------------------------
def test_lstm_activations_show_the_cell_state_and_the_gates(api, runs):
    for layer in (0, 1):
        answer = api.post("/api/activations", json={"model": 0, "text": SNIPPET, "layer": layer}).json()
        assert answer["quantities"] == ["h", "c", "i", "f", "g", "o"] and answer["tokens"] == list(SNIPPET)
        ranking = answer["ranking"]
        assert sorted(r["unit"] for r in ranking) == list(range(16))
        assert [r["std"] for r in ranking] == sorted((r["std"] for r in ranking), reverse=True)
        assert [u["unit"] for u in answer["units"]] == [r["unit"] for r in ranking[:8]]  # the 8 most varying
        for u in answer["units"]:
            v = {q: np.array(x) for q, x in u["values"].items()}
            assert all(len(x) == len(SNIPPET) for x in v.values())
            assert v["h"].std() == pytest.approx(u["std"], abs=1e-4)
            np.testing.assert_allclose(v["o"] * np.tanh(v["c"]), v["h"], atol=1e-4)  # h = o * tanh(c)
            c_prev = np.concatenate([[0.0], v["c"][:-1]])
            np.testing.assert_allclose(v["f"] * c_prev + v["i"] * v["g"], v["c"], atol=1e-4)
            assert ((v["f"] >= 0) & (v["f"] <= 1)).all() and ((v["g"] >= -1) & (v["g"] <= 1)).all()
    # the top layer's h is what the model's own (fused) stack computes
    m, vocab, _ = load_model(runs["lstm"])
    with torch.no_grad():
        out, _ = m.rnn(m.embed(torch.as_tensor(vocab.encode(SNIPPET)).unsqueeze(0)))  # (1, T, H)
    answer = api.post("/api/activations", json={"text": SNIPPET, "layer": 1, "units": [5, 2, 5]}).json()
    assert [u["unit"] for u in answer["units"]] == [5, 2]
    for u in answer["units"]:
        np.testing.assert_allclose(u["values"]["h"], out[0, :, u["unit"]].numpy(), atol=1e-4)


def test_gru_activations_rank_by_a_gate(api):
    answer = api.post("/api/activations", json={"model": "gru", "text": SNIPPET, "rank_by": "z", "top_units": 3}).json()
    assert answer["quantities"] == ["h", "r", "z", "n"] and answer["rank_by"] == "z" and len(answer["units"]) == 3
    for u in answer["units"]:
        v = {q: np.array(x) for q, x in u["values"].items()}
        assert v["z"].std() == pytest.approx(u["std"], abs=1e-4)
        h_prev = np.concatenate([[0.0], v["h"][:-1]])
        np.testing.assert_allclose((1 - v["z"]) * v["n"] + v["z"] * h_prev, v["h"], atol=1e-4)


# --- bad input: 4xx with one clear line, never 500 --------------------------------------------------
GEN, SCORE, ACTS = "/api/generate", "/api/score", "/api/activations"


@pytest.mark.parametrize("path,body,words", [
    (GEN, {"temperature": 0}, ["temperature"]),
    (GEN, {"temperature": -1}, ["temperature"]),
    (GEN, {"temperature": 1e9}, ["temperature"]),
    (GEN, {"temperature": "hot"}, ["temperature"]),
    (GEN, {"top_k": -1}, ["top_k"]),
    (GEN, {"top_p": 0}, ["top_p"]),
    (GEN, {"top_p": 1.5}, ["top_p"]),
    (GEN, {"length": -1}, ["length"]),
    (GEN, {"length": MAX_LENGTH + 1}, ["length", str(MAX_LENGTH)]),
    (GEN, {"length": 1.5}, ["length"]),
    (GEN, {"length": "many"}, ["length"]),
    (GEN, {"seed": -1}, ["seed"]),
    (GEN, {"seed": 2**64}, ["seed"]),
    (GEN, {"strategy": "beam"}, ["strategy"]),
    (GEN, {"top": 21}, ["top"]),
    (GEN, {"prime": 5}, ["prime"]),
    (GEN, {"prime": "a" * (MAX_PRIME_CHARS + 1)}, ["prime", str(MAX_PRIME_CHARS)]),
    (GEN, {"temprature": 0.5}, ["temprature"]),
    (GEN, {"model": None}, ["model"]),
    (GEN, {"model": True}, ["model"]),  # strict: true is not index 1
    (GEN, {"model": 1.0}, ["model"]),
    (GEN, {"length": True}, ["length"]),
    (GEN, {"seed": "5"}, ["seed"]),
    (GEN, [1, 2], ["body"]),
    (SCORE, {}, ["text", "required"]),
    (SCORE, {"text": ""}, ["text"]),
    (SCORE, {"text": "a" * (MAX_TEXT_CHARS + 1)}, ["text", str(MAX_TEXT_CHARS)]),
    (SCORE, {"text": "the", "top": -1}, ["top"]),
    (ACTS, {"text": "the cat", "layer": 2}, ["layer", "[0, 1]"]),
    (ACTS, {"text": "the cat", "layer": -1}, ["layer"]),
    (ACTS, {"text": "the cat", "units": [16]}, ["units", "[0, 15]"]),
    (ACTS, {"text": "the cat", "units": [-1]}, ["units"]),
    (ACTS, {"text": "the cat", "units": list(range(65))}, ["units"]),
    (ACTS, {"text": "the cat", "top_units": 1000}, ["top_units"]),
    (ACTS, {"text": "the cat", "rank_by": "x"}, ["rank_by", "h, c, i, f, g, o"]),
    (ACTS, {"model": "gru", "text": "the cat", "rank_by": "c"}, ["rank_by", "h, r, z, n"]),
    (ACTS, {"text": "a" * 2001}, ["text"]),
])
def test_bad_parameters_are_a_clear_422(api, path, body, words):
    body = assert_error(api.post(path, json=body), 422, *words)
    assert "Traceback" not in json.dumps(body)


@pytest.mark.parametrize("raw", [b"{", b"", b"null", b'{"temperature": NaN}', b'{"length": Infinity}',
                                 b"\xff\xfe", b'{"prime": "\\ud800"}'])
def test_malformed_bodies_are_4xx(api, raw):
    resp = api.post(GEN, content=raw, headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500 and isinstance(resp.json()["error"], str), resp.text


def test_an_oversize_body_is_refused_before_it_is_parsed(api):
    big = json.dumps({"text": "a" * (MAX_BODY_BYTES + 10)}).encode()
    assert_error(api.post(SCORE, content=big, headers={"content-type": "application/json"}), 413, "bytes")

    async def chunks():  # no content-length: counted as it arrives
        for _ in range(MAX_BODY_BYTES // 1000 + 2):
            yield b" " * 1000

    assert_error(api.post(SCORE, content=chunks(), headers={"content-type": "application/json"}), 413)


@pytest.mark.parametrize("path,key", [(GEN, "prime"), (SCORE, "text"), (ACTS, "text")])
def test_unknown_characters_are_named(api, path, key):
    body = assert_error(api.post(path, json={key: "the cat☃é\t"}), 422, key, "'☃'", "'é'", "'\\t'")
    assert body["unknown"] == ["\t", "é", "☃"]


def test_wrong_methods_routes_and_content_types_are_4xx(api):
    assert_error(api.post(GEN, content=b'{"length": 3}', headers={"content-type": "text/plain"}), 422, "send JSON")
    assert_error(api.post(GEN, content=b'{"length": 3}'), 422, "without a Content-Type", "send JSON")
    assert api.get(GEN).status_code == 405
    assert api.post("/api/models", json={}).status_code == 405
    assert_error(api.get("/api/nothing"), 404)


def test_a_host_outside_the_allowed_list_is_refused(runs):
    api = Api(build_app([str(runs["gru"])], allowed_hosts=["127.0.0.1", "localhost"]))
    try:
        body = assert_error(api.get("/api/models"), 400, "127.0.0.1, localhost", "'testserver'")  # JSON as every error
        assert set(body) == {"error"}
        assert api.get("/api/models", headers={"host": "localhost:8000"}).status_code == 200
        assert api.post(SCORE, json={"model": "gru", "text": "the cat"}, headers={"host": "localhost"}).status_code == 200
    finally:
        api.close()


# --- the rest: limits, schema, page, concurrency, kinds --------------------------------------------------
def test_limits_openapi_docs_and_page_are_served(api):
    limits = api.get("/api/limits").json()
    assert (limits["max_length"], limits["max_prime_chars"]) == (MAX_LENGTH, MAX_PRIME_CHARS)
    schema = api.get("/openapi.json").json()
    assert {"/api/models", "/api/models/{model}", "/api/limits", "/api/generate", "/api/score",
            "/api/activations"} <= set(schema["paths"])
    gen = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert gen["length"]["maximum"] == MAX_LENGTH and gen["prime"]["maxLength"] == MAX_PRIME_CHARS
    assert "application/x-ndjson" in schema["paths"]["/api/generate"]["post"]["responses"]["200"]["content"]
    assert "ScoreAnswer" in schema["components"]["schemas"] and "ActivationsAnswer" in schema["components"]["schemas"]
    assert api.get("/docs").status_code == 200
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="prob-panel"' in page.text and "/api/generate" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def _references(html: str) -> list[str]:
    """Every URL a page loads or links to: src, href, action, CSS url(...), and the docs' OpenAPI url."""
    import re

    found = re.findall(r"""(?:src|href|action)\s*=\s*["']([^"']*)["']""", html)
    found += re.findall(r"""url\(\s*["']?([^"')]*)""", html)
    found += re.findall(r"""\burl:\s*["']([^"']*)["']""", html)
    return found


def test_no_page_references_an_outside_host(api):
    """The page and /docs (Swagger UI, from the installed swagger-ui-bundle) load everything from this server."""
    seen = []
    for path in ("/", "/docs"):
        page = api.get(path)
        assert page.status_code == 200
        assert "cdn" not in page.text.lower() and "fastapi.tiangolo.com" not in page.text
        refs = [r for r in _references(page.text) if not r.startswith(("data:", "#"))]
        assert all(r.startswith("/") and not r.startswith("//") for r in refs), (path, refs)
        seen += refs
    assert '"validatorUrl": null' in api.get("/docs").text  # no validity badge fetched from swagger.io
    docs_refs = _references(api.get("/docs").text)
    assert {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/openapi.json"} <= set(docs_refs)
    for ref in seen:  # each one is served here
        assert api.get(ref).status_code == 200, ref
    css = api.get("/docs-assets/swagger-ui.css").text
    assert all(r.startswith("data:") for r in _references(css))
    assert api.get("/redoc").status_code == 404  # ReDoc would load from a CDN: not served


def test_model_work_does_not_block_other_clients(api, slow_streams):
    async def scenario():
        t0 = time.perf_counter()

        async def gen(seed: int) -> float:
            r = await api.client.post(GEN, json={"length": 1000, "seed": seed, "top": 0})
            assert r.status_code == 200 and r.text.endswith('"generated":1000}\n')
            return time.perf_counter() - t0

        async def listing() -> float:
            await asyncio.sleep(0.05)
            r = await api.client.get("/api/models")
            assert r.status_code == 200
            return time.perf_counter() - t0

        *gens, listed = await asyncio.gather(*(gen(s) for s in range(4)), listing())
        return gens, listed

    gens, listed = api.portal.call(scenario)
    assert listed < min(gens)  # answered while all four generations were still running


def test_concurrent_streams_are_complete_and_each_is_its_seeds_text(runs):
    """The load test's checks (benchmarks/bench_serve.py), short: clients joining at different times, with
    different settings, each answer complete and the text rnnlab.sampling.generate gives with its seed."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_serve import check_answer

    api = Api(build_app([str(runs["lstm"])], max_streams=12))
    model, vocab, _ = load_model(runs["lstm"])
    reqs = [{"model": "lstm", "prime": ["the cat", "a ", "", "dog"][k % 4], "length": 30 + 7 * k, "seed": 50 + k,
             "top": k % 3, "strategy": "argmax" if k == 5 else "sample",
             **([{"temperature": 0.8}, {"top_k": 4}, {"top_p": 0.9}, {}][k % 4])} for k in range(12)]

    async def scenario():
        async def one(k: int) -> tuple[int, list[str]]:
            await asyncio.sleep(0.01 * k)  # joining while the others stream
            r = await api.client.post(GEN, json=reqs[k])
            return r.status_code, r.text.splitlines()

        return await asyncio.gather(*(one(k) for k in range(12)))

    try:
        answers = api.portal.call(scenario)
    finally:
        api.close()
    differ = 0
    for req, (status, got) in zip(reqs, answers):
        assert status == 200 and check_answer(got, {"top": 5, **req}, set(vocab.symbols)) is None
        cfg = {k: v for k, v in req.items() if k not in ("model", "top")}
        differ += json.loads(got[-1])["text"] != generate(model, vocab, SampleConfig(**cfg))[0]
    assert differ <= 1  # at most a draw within rounding of a boundary (tests/test_scheduler.py checks them)
    assert api.client._transport.app.state.streams.open == {}


def test_a_new_checkpoint_kind_plugs_in_through_the_loaders(runs, tmp_path, monkeypatch):
    toy = tmp_path / "toy.safetensors"
    save_file({"w": torch.zeros(1)}, str(toy), metadata={"format": "rnnlab-checkpoint", "version": "1", "kind": "toy"})
    with pytest.raises(CheckpointError, match="'toy' checkpoint; this server serves language-model"):
        build_app([str(toy)])
    monkeypatch.setitem(LOADERS, "toy", lambda path, index, name: ServedModel(index, name, "toy", path.name))
    api = Api(build_app([str(runs["gru"]), str(toy)]))
    try:
        assert [(m["name"], m["kind"]) for m in api.get("/api/models").json()] == [("gru", "language-model"),
                                                                                     ("toy", "toy")]
        assert_error(api.post(GEN, json={"model": "toy"}), 422, "'toy' is a toy", "language model")
        assert_error(api.post(SCORE, json={"model": 1, "text": "the"}), 422, "language model")
    finally:
        api.close()


def test_startup_refuses_what_it_cannot_serve(tmp_path, runs):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        build_app([str(tmp_path / "missing.safetensors")])
    (tmp_path / "model.pt").write_bytes(b"\x80\x04K.")
    with pytest.raises(CheckpointError, match="pickle"):
        build_app([str(tmp_path / "model.pt")])
    with pytest.raises(ValueError, match="workers"):
        build_app([str(runs["gru"])], workers=0)
    names = [e.name for e in build_app([str(runs["gru"]), str(runs["gru"])]).state.registry.entries]
    assert names == ["gru", "gru-2"]


def test_the_serve_command_refuses_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    from rnnlab.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"rnnlab: error: no such checkpoint: {tmp_path / 'missing'}"]


def test_a_word_level_model_streams_what_the_command_line_writes(runs, tmp_path):
    """A prime ending in a space gets no second space (as `rnnlab sample`), a text of white space alone is
    a 422 naming it, and an unseeded request's seed fits a JavaScript number (so the page can repeat it)."""
    from conftest import TEXT

    from rnnlab.checkpoint import load_model
    from rnnlab.config import SampleConfig
    from rnnlab.sampling import generate

    (tmp_path / "w.txt").write_text(TEXT, encoding="utf-8")
    cfg = RunConfig(data=DataConfig(data=str(tmp_path / "w.txt"), level="word"),
                    model=ModelConfig(cell="gru", hidden_size=16, num_layers=1, dropout=0.0, embedding_size=8),
                    train=TrainConfig(batch_size=4, seq_len=8, max_steps=4, eval_interval=4, out=str(tmp_path / "w")))
    train(cfg, progress=False)
    api = Api(build_app([str(tmp_path / "w")]))
    try:
        got = lines(api.post(GEN, json={"prime": "the ", "length": 6, "seed": 3}))
        text = "the " + "".join(e["text"] for e in got if e["type"] == "token")
        model, vocab, _ = load_model(tmp_path / "w")
        assert text == generate(model, vocab, SampleConfig(prime="the ", length=6, seed=3))[0]
        assert not text.startswith("the  ")
        for path in (SCORE, ACTS):
            assert_error(api.post(path, json={"text": "  \t "}), 422, "text holds no words")
        seeds = [lines(api.post(GEN, json={"length": 1}))[0]["seed"] for _ in range(20)]
        assert all(0 <= s < 2**53 for s in seeds) and len(set(seeds)) == 20
    finally:
        api.close()

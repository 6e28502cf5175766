"""The server's classifier side: /api/models lists classifiers, POST /api/classify answers
exactly what rnnlab.classify.predict answers, and every bad input or kind mismatch (a language
model asked to classify, a classifier asked to generate, a vector classifier given text) is a
clear 4xx, never a 500."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import NAME_SUFFIXES, TEXT, tiny_names_classifier
from test_serve_api import Api, assert_error, tiny_run

from rnnlab.checkpoint import save_checkpoint
from rnnlab.classify import predict
from rnnlab.config import ClassifyRunConfig, ModelConfig
from rnnlab.data.vocab import Vocab
from rnnlab.nn.classifier import build_classifier
from rnnlab.serve import MAX_TEXT_CHARS, build_app

CLASSIFY = "/api/classify"
CLASSES = sorted(NAME_SUFFIXES)  # the class names, as the folder of <label>.txt files gives them


def _untrained(path: Path, labels: list[str], vocab: Vocab | None, feature_size: int = 0, **classifier) -> Path:
    """A classifier checkpoint written straight from a fresh model (no training needed to serve it)."""
    cfg = ClassifyRunConfig()
    cfg.data.data = "data.jsonl"
    cfg.data.level = vocab.level if vocab else "char"
    cfg.model = ModelConfig(cell="lstm", hidden_size=8, num_layers=2, dropout=0.0, embedding_size=4)
    cfg.classifier.ensemble = 1  # one RNNClassifier
    for k, v in classifier.items():
        setattr(cfg.classifier, k, v)
    model = build_classifier(cfg, len(labels), vocab_size=len(vocab) if vocab else 0, feature_size=feature_size)
    save_checkpoint(path, model, cfg, vocab, train_state={"step": 0},
                    extra={"labels": labels, "feature_size": feature_size})
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("serve-classify")
    (d / "corpus.txt").write_text(TEXT, encoding="utf-8")
    return {"gru": tiny_run(d / "corpus.txt", d / "gru", "gru", 1),
            "names": tiny_names_classifier(d),
            "vectors": _untrained(d / "vectors.safetensors", ["down", "up"], None, feature_size=3, bidirectional=False),
            "words": _untrained(d / "words.safetensors", ["neg", "pos"],
                                Vocab.from_words("a good film a bad film the movie".split()))}


@pytest.fixture(scope="module")
def api(runs):
    a = Api(build_app([str(runs[k]) for k in ("gru", "names", "vectors", "words")]))
    yield a
    a.close()


def test_classifiers_are_listed_with_their_classes_and_shape(api, runs):
    models = {m["name"]: m for m in api.get("/api/models").json()}
    assert list(models) == ["gru", "names", "vectors", "words"]
    names, vectors, words = models["names"], models["vectors"], models["words"]
    assert models["gru"]["kind"] == "language-model" and models["gru"].get("classes") is None
    assert (names["kind"], names["classes"], names["num_classes"], names["reads"]) == ("classifier", CLASSES, 3, "text")
    assert (names["cell"], names["num_layers"], names["hidden_size"], names["bidirectional"]) == ("gru", 1, 12, True)
    assert (names["level"], names["input"], names["step"], names["file"]) == ("char", "embedding", 20, "best.safetensors")
    assert (vectors["reads"], vectors["feature_size"], vectors["bidirectional"]) == ("vectors", 3, False)
    assert (vectors["cell"], vectors["num_layers"], vectors["hidden_size"], vectors["vocab_size"]) == ("lstm", 2, 8, None)
    assert (words["reads"], words["level"], words["classes"]) == ("text", "word", ["neg", "pos"])
    assert str(runs["names"].parent) not in json.dumps(list(models.values()))  # no folder reaches the client
    detail = api.get("/api/models/names").json()
    assert detail["classes"] == CLASSES and "o" in detail["symbols"] and "v" in detail["symbols"]
    assert api.get("/api/models/vectors").json()["symbols"] is None


@pytest.mark.parametrize("text", ["novikov", "gomez", "rossini", "i", "petrovez", "lev" * 300])
def test_class_probabilities_are_rnnlab_classify_predict(api, runs, text):
    answer = api.post(CLASSIFY, json={"model": "names", "text": text}).json()
    want = predict(runs["names"], [text], top_k=3)[0]["top"]
    assert answer["model"] == "names" and answer["tokens"] == list(text)
    assert [c["label"] for c in answer["classes"]] == [c["label"] for c in want]
    # the same function on the same weights; only the intra-op thread count may differ (the server
    # runs it in its pool), which reorders float32 sums in the last bits
    assert [c["prob"] for c in answer["classes"]] == pytest.approx([c["prob"] for c in want], rel=1e-6, abs=1e-9)
    probs = [c["prob"] for c in answer["classes"]]
    assert sum(probs) == pytest.approx(1.0, abs=1e-12) and probs == sorted(probs, reverse=True)
    assert all(0 <= p <= 1 for p in probs) and sorted(c["label"] for c in answer["classes"]) == CLASSES


def test_the_trained_classifier_already_tells_the_endings_apart(api):
    for stem in ("novik", "gom", "ross"):
        for label, suffix in NAME_SUFFIXES.items():
            assert api.post(CLASSIFY, json={"model": 1, "text": stem + suffix}).json()["classes"][0]["label"] == label


def test_top_chooses_how_many_classes_come_back(api):
    full = api.post(CLASSIFY, json={"model": "names", "text": "novikov"}).json()["classes"]
    assert len(full) == 3  # the default (5) asks for all of the 3 classes
    for top in (1, 2, 3):
        assert api.post(CLASSIFY, json={"model": "names", "text": "novikov", "top": top}).json()["classes"] == full[:top]
    assert len(api.post(CLASSIFY, json={"model": "words", "text": "a film"}).json()["classes"]) == 2


def test_a_word_level_classifier_reads_words_and_unknown_words_as_unk(api, runs):
    text = "a good film, said the critic"  # "film,", "said", "critic" are not in its vocabulary: <unk>, as in predict
    answer = api.post(CLASSIFY, json={"model": "words", "text": text}).json()
    want = predict(runs["words"], [text], top_k=2)[0]["top"]
    assert [c["label"] for c in answer["classes"]] == [c["label"] for c in want]
    assert [c["prob"] for c in answer["classes"]] == pytest.approx([c["prob"] for c in want], rel=1e-6, abs=1e-9)
    assert answer["tokens"] == ["a", " good", " film,", " said", " the", " critic"]
    assert_error(api.post(CLASSIFY, json={"model": "words", "text": "  \t "}), 422, "is empty or only white space")


def test_the_longest_text_is_classified(api):
    answer = api.post(CLASSIFY, json={"model": "names", "text": ("borisov" * MAX_TEXT_CHARS)[:MAX_TEXT_CHARS]}).json()
    assert len(answer["tokens"]) == MAX_TEXT_CHARS and sum(c["prob"] for c in answer["classes"]) == pytest.approx(1.0)


def test_many_clients_at_once_get_the_same_answers(api):
    texts = ["novikov", "gomez", "rossini", "igorez"] * 6

    async def scenario() -> list[dict]:
        rs = await asyncio.gather(*(api.client.post(CLASSIFY, json={"model": "names", "text": t}) for t in texts))
        return [r.json() for r in rs]

    answers = api.portal.call(scenario)
    alone = {t: api.post(CLASSIFY, json={"model": "names", "text": t}).json() for t in set(texts)}
    assert answers == [alone[t] for t in texts]


@pytest.mark.parametrize("body,words", [
    ({"model": "names"}, ["text", "required"]),
    ({"model": "names", "text": ""}, ["text"]),
    ({"model": "names", "text": "ivan" * MAX_TEXT_CHARS}, ["text", str(MAX_TEXT_CHARS)]),
    ({"model": "names", "text": 5}, ["text"]),
    ({"model": "names", "text": ["ivanov"]}, ["text"]),
    ({"model": "names", "text": "ivanov", "top": 0}, ["top"]),
    ({"model": "names", "text": "ivanov", "top": -2}, ["top"]),
    ({"model": "names", "text": "ivanov", "top": 4}, ["top", "[1, 3]", "3 classes"]),
    ({"model": "words", "text": "a film", "top": 5}, ["top", "[1, 2]"]),
    ({"model": "names", "text": "ivanov", "top": 10**30}, ["top"]),
    ({"model": "names", "text": "ivanov", "top": 1.0}, ["top"]),
    ({"model": "names", "text": "ivanov", "top": "2"}, ["top"]),
    ({"model": "names", "text": "ivanov", "top": True}, ["top"]),
    ({"model": "names", "text": "ivanov", "top_k": 2}, ["top_k"]),
    ({"model": None, "text": "ivanov"}, ["model"]),
    ({"model": 1.0, "text": "ivanov"}, ["model"]),
])
def test_bad_parameters_are_a_clear_422(api, body, words):
    assert "Traceback" not in json.dumps(assert_error(api.post(CLASSIFY, json=body), 422, *words))


@pytest.mark.parametrize("ref", [4, -1, "nope", "../names", "/etc/passwd", "names/best.safetensors", "01"])
def test_unknown_models_are_404(api, ref):
    assert_error(api.post(CLASSIFY, json={"model": ref, "text": "ivanov"}), 404, "no model")


@pytest.mark.parametrize("raw", [b"{", b"", b"null", b"[]", b'{"text": NaN}', b"\xff\xfe", b'{"text": "\\ud800"}'])
def test_malformed_bodies_are_4xx(api, raw):
    resp = api.post(CLASSIFY, content=raw, headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500 and isinstance(resp.json()["error"], str), resp.text


def test_unknown_characters_are_named(api):
    body = assert_error(api.post(CLASSIFY, json={"model": "names", "text": "Ivanov☃\t"}), 422,
                        "text", "'I'", "'☃'", "'\\t'")
    assert body["unknown"] == ["\t", "I", "☃"]


def test_kind_mismatches_are_a_clear_422(api):
    body = assert_error(api.post(CLASSIFY, json={"model": "gru", "text": "the cat"}), 422,
                        "'gru' is a language-model", "not a classifier", "/api/classify", "/api/generate")
    assert "Traceback" not in json.dumps(body)
    for ref in ("names", 1, "vectors", "words"):
        for path, extra in (("/api/generate", {"length": 3}), ("/api/score", {"text": "ivanov"}),
                            ("/api/activations", {"text": "ivanov"})):
            assert_error(api.post(path, json={"model": ref, **extra}), 422, "is a classifier", path,
                         "needs a language model", "/api/classify")
    assert_error(api.post(CLASSIFY, json={"model": "vectors", "text": "ivanov"}), 422,
                 "'vectors' reads vector sequences", "3 numbers", "not text")


def test_the_schema_documents_classify(api):
    schema = api.get("/openapi.json").json()
    post = schema["paths"][CLASSIFY]["post"]
    assert {"200", "404", "422"} <= set(post["responses"])
    req = schema["components"]["schemas"]["ClassifyRequest"]["properties"]
    assert req["text"]["maxLength"] == MAX_TEXT_CHARS and req["top"]["minimum"] == 1 and req["top"]["default"] == 5
    assert "ClassifyAnswer" in schema["components"]["schemas"]
    assert {"classes", "reads", "bidirectional"} <= set(schema["components"]["schemas"]["ModelInfo"]["properties"])
    page = api.get("/").text
    assert 'id="classify"' in page and CLASSIFY in page

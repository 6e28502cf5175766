"""Sequence classification: the last real state, the split, the metrics, training, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rnnlab.classify import evaluate_classifier, pad_batch, predict, predict_proba, prefix_proba, train_classifier
from rnnlab.cli import main
from rnnlab.config import ClassifyRunConfig, ModelConfig
from rnnlab.data.sequences import class_weights, read_labelled, sampling_probabilities, split_examples
from rnnlab.errors import ConfigError, DataError
from rnnlab.metrics import classification_metrics
from rnnlab.nn.classifier import RNNClassifier, reverse_padded


# the model: the state after the last real element --------------------------------------------

@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("pool", ["last", "mean", "last+mean"])
def test_what_the_head_reads_ignores_padding(cell, bidirectional, fused, pool):
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, hidden_size=8, num_layers=2, dropout=0.0, embedding_size=5)
    model = RNNClassifier(cfg, num_classes=3, vocab_size=7, bidirectional=bidirectional, pool=pool).double().eval()
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 7, size=n) for n in (1, 4, 9, 2)]
    x, lengths = pad_batch(seqs)
    x[x == 0] = 0
    for b, n in enumerate(lengths):
        x[b, n:] = rng.integers(0, 7, size=x.shape[1] - n)  # padding that is not zero: it must not matter
    batched = model(torch.from_numpy(x), torch.from_numpy(lengths), fused=fused)  # (B, C)
    for b, s in enumerate(seqs):  # a loop over the unpadded sequences, one at a time, through the unroller
        alone = torch.from_numpy(s)[None]
        one = model(alone, torch.tensor([len(s)]), fused=False)[0]
        e = model.embed(alone)  # by hand: the plain stack over the sequence (and over it flipped)

        def read(out):  # (1, L, H) -> the last state, the mean of all L, or both
            return {"last": [out[0, -1]], "mean": [out[0].mean(0)], "last+mean": [out[0, -1], out[0].mean(0)]}[pool]

        parts = read(model.rnn(e, fused=False)[0])
        if bidirectional:
            parts += read(model.rnn_reverse(torch.flip(e, dims=[1]), fused=False)[0])
        assert torch.allclose(one, model.head(torch.cat(parts)), atol=1e-12)
        assert torch.allclose(batched[b], one, atol=1e-10), (cell, b)


def test_label_smoothing_aims_at_the_class_prior():
    """The smoothed loss is the cross entropy against the target (1 - eps) onehot(y) + eps pi, weighted by the
    label's class weight; with a uniform prior it is torch's label smoothing, with eps 0 the plain loss."""
    from rnnlab.classify import smoothed_cross_entropy

    torch.manual_seed(0)
    logits, y = torch.randn(7, 4, dtype=torch.float64), torch.tensor([0, 1, 1, 3, 2, 0, 0])
    prior = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    logp = torch.log_softmax(logits, -1).numpy()
    target = 0.2 * prior.numpy()[None, :] + 0.8 * np.eye(4)[y.numpy()]  # (7, 4)
    per = -(target * logp).sum(1)  # (7,): the soft target's cross entropy, row by row
    ww = w.numpy()[y.numpy()]
    got = smoothed_cross_entropy(logits, y, w, 0.2, prior)
    assert float(got) == pytest.approx(float((ww * per).sum() / ww.sum()), rel=1e-12)
    assert float(smoothed_cross_entropy(logits, y, None, 0.2, prior)) == pytest.approx(float(per.mean()), rel=1e-12)
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    assert torch.allclose(smoothed_cross_entropy(logits, y, None, 0.1, uniform),
                          torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1), atol=1e-12)
    assert torch.allclose(smoothed_cross_entropy(logits, y, w, 0.0, prior),
                          torch.nn.functional.cross_entropy(logits, y, weight=w), atol=1e-12)


def test_reverse_padded_reverses_only_the_real_part():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]])
    r = reverse_padded(x, torch.tensor([3, 2, 4]))
    assert r.tolist() == [[3, 2, 1, 0], [5, 4, 0, 0], [9, 8, 7, 6]]


def test_vector_inputs_feed_the_first_layer_directly():
    model = RNNClassifier(ModelConfig(cell="gru", hidden_size=4, num_layers=1, dropout=0.0), 2, feature_size=3)
    assert model.embedding is None and model.rnn.layers[0].weight_ih.shape[1] == 3
    x, lengths = pad_batch([np.ones((2, 3), np.float32), np.zeros((5, 3), np.float32)])
    assert x.shape == (2, 5, 3) and lengths.tolist() == [2, 5]
    assert model(torch.from_numpy(x), torch.from_numpy(lengths)).shape == (2, 2)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("inputs", ["ids", "vectors"])
@pytest.mark.parametrize("pool", ["last", "mean", "last+mean"])
def test_every_prefix_in_one_pass_is_each_prefix_classified_alone(cell, bidirectional, inputs, pool):
    """Row t of prefix_proba is predict_proba of the first t + 1 elements, read as a sequence of its own
    (with a logit adjustment, which both apply)."""
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, hidden_size=8, num_layers=2, dropout=0.3, embedding_size=5)
    size = {"vocab_size": 7} if inputs == "ids" else {"feature_size": 3}
    model = RNNClassifier(cfg, num_classes=4, bidirectional=bidirectional, pool=pool, **size).train()  # eval: its job
    model.logit_shift = np.array([0.5, -0.2, 0.0, 1.0])
    rng = np.random.default_rng(2)
    seq = rng.integers(0, 7, size=9) if inputs == "ids" else rng.random((9, 3)).astype(np.float32)
    rows = prefix_proba(model, seq)
    alone = np.stack([predict_proba(model, [seq[:t]])[0] for t in range(1, len(seq) + 1)])
    assert rows.shape == (9, 4) and model.training
    np.testing.assert_allclose(rows, alone, atol=1e-6)
    assert not np.allclose(rows[0], rows[-1])  # the prefixes differ: a row repeated would fail
    with pytest.raises(DataError, match="empty"):
        prefix_proba(model, seq[:0])


# the split -------------------------------------------------------------------------------------

def test_the_split_keeps_duplicates_together_and_every_class():
    rng = np.random.default_rng(0)
    inputs, labels = [], []
    for c in range(4):
        names = [f"n{c}_{i}" for i in range(30 + 20 * c)]
        for name in names:
            for _ in range(int(rng.integers(1, 4))):  # exact duplicates, as in the names data
                inputs.append(name)
                labels.append(c)
    labels = np.array(labels)
    split = split_examples(inputs, labels, 0.1, 0.2, seed=3)
    parts = {s: {inputs[i] for i in idx} for s, idx in split.items()}
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"]) and not (parts["val"] & parts["test"])
    assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(len(inputs)))  # nothing lost
    for s in ("train", "val", "test"):
        assert set(labels[split[s]].tolist()) == {0, 1, 2, 3}  # every class in every split
    for c in range(4):  # stratified: each class's distinct inputs split about 70/10/20
        distinct = len({x for x, y in zip(inputs, labels) if y == c})
        held = len({inputs[i] for i in split["test"] if labels[i] == c})
        assert held == round(distinct * 0.2)
    again = split_examples(inputs[::-1], labels[::-1], 0.1, 0.2, seed=3)  # the file order does not matter
    n = len(inputs)
    assert sorted(n - 1 - again["test"]) == split["test"].tolist()
    assert split_examples(inputs, labels, 0.1, 0.2, seed=4)["test"].tolist() != split["test"].tolist()


def test_a_tie_stratifies_with_the_rarer_class():
    # "smith" is English and Scottish once each; Scottish is rare: the group counts as Scottish,
    # so the rare class keeps enough distinct inputs to reach every split
    inputs = [f"e{i}" for i in range(40)] + ["smith", "smith", "brown", "brown", "scott"]
    labels = np.array([0] * 40 + [0, 1, 0, 1, 1])
    split = split_examples(inputs, labels, 0.2, 0.2, seed=0)
    for s in ("train", "val", "test"):
        assert 1 in labels[split[s]].tolist()


def test_class_weights_and_balanced_sampling():
    y = np.array([0] * 90 + [1] * 10)
    w = class_weights(y, 2, "weights")
    assert np.allclose(w, [100 / (2 * 90), 100 / (2 * 10)])
    sw = class_weights(y, 2, "sqrt-weights")
    assert np.isclose((sw[y]).mean(), 1.0) and np.isclose(sw[1] / sw[0], 3.0)
    assert class_weights(y, 2, "none") is None
    p = sampling_probabilities(y, 2)
    assert np.isclose(p[y == 0].sum(), 0.5) and np.isclose(p[y == 1].sum(), 0.5)


# metrics ---------------------------------------------------------------------------------------

def test_metrics_against_a_hand_computed_confusion_matrix():
    # true a a a a b b c c c c ; predicted a a a b b c c c a c
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0, 2])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["confusion"] == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert m["acc"] == pytest.approx(7 / 10)
    assert m["balanced_acc"] == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)
    pa, ra = 3 / 4, 3 / 4
    pb, rb = 1 / 2, 1 / 2
    pc, rc = 3 / 4, 3 / 4
    assert m["per_class"]["a"]["precision"] == pytest.approx(pa) and m["per_class"]["b"]["recall"] == pytest.approx(rb)
    f1 = [2 * p * r / (p + r) for p, r in ((pa, ra), (pb, rb), (pc, rc))]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["per_class"]["c"]["support"] == 4


# reading ---------------------------------------------------------------------------------------

def _names(folder, per_class: dict[str, list[str]]):
    folder.mkdir()
    for label, names in per_class.items():
        (folder / f"{label}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return folder


def test_the_formats_agree(tmp_path):
    rows = [("anna", "x"), ("bob", "y"), ("cara", "x"), ("dan", "y")]
    folder = _names(tmp_path / "f", {"x": ["anna", "cara"], "y": ["bob", "dan"]})
    (tmp_path / "d.csv").write_text("name,lang\n" + "".join(f"{a},{b}\n" for a, b in rows))
    (tmp_path / "d.tsv").write_text("name\tlang\n" + "".join(f"{a}\t{b}\n" for a, b in rows))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"name": a, "lang": b}) + "\n" for a, b in rows))
    ref = sorted(zip(*(lambda d: (d.inputs, d.labels))(read_labelled(str(folder)))))
    for name in ("d.csv", "d.tsv", "d.jsonl"):
        d = read_labelled(str(tmp_path / name), input_column="name", label_column="lang")
        assert sorted(zip(d.inputs, d.labels)) == ref and d.kind == "text"
    v = tmp_path / "v.jsonl"
    v.write_text(json.dumps({"text": [[0.5, 1.0], [0.0, 2.0]], "label": 1}) + "\n"
                 + json.dumps({"text": [[1.0, 1.0]], "label": 0}) + "\n")
    d = read_labelled(str(v))
    assert d.kind == "vectors" and d.feature_size == 2 and d.inputs[0].shape == (2, 2) and d.labels == ["1", "0"]


@pytest.mark.parametrize("make, message", [
    (lambda p: _names(p / "one", {"x": ["a", "b", "c"]}), "holds one class only"),
    (lambda p: _names(p / "blank", {"x": ["a", "", "c"], "y": ["d"]}), "line 2 is empty"),
    (lambda p: (p / "d.csv").write_text("name,lang\nanna,x\n") and p / "d.csv", "has no column 'text', 'label'"),
    (lambda p: (p / "d.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": [[1]], "label": "y"}\n')
     and p / "d.jsonl", "mixes text inputs and vector inputs"),
    (lambda p: (p / "d.jsonl").write_text('{"text": [[1, 2], [3]], "label": "x"}\n') and p / "d.jsonl",
     "equally long lists"),
    (lambda p: (p / "d.xml").write_text("<a/>") and p / "d.xml", "unknown format"),
    (lambda p: p / "missing", "no such file or folder"),
])
def test_bad_data_gets_a_clear_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(DataError, match=message):
        read_labelled(str(path), input_column="text", label_column="label")


def test_a_header_with_line_ends_is_named_on_one_line(tmp_path):
    """A quoted header field may hold a line end; the error shows each column's repr, on one line."""
    path = tmp_path / "d.csv"
    path.write_text('"na\nme",lang\nanna,x\n')
    with pytest.raises(DataError) as e:
        read_labelled(str(path), input_column="text", label_column="label")
    assert "\n" not in str(e.value) and "'na\\nme', 'lang'" in str(e.value)


# training, saving, predicting ------------------------------------------------------------------

def _tiny_names(tmp_path):
    """Two classes a small GRU tells apart at once: names ending in -ov vs names ending in -ez."""
    stems = ["ivan", "petr", "boris", "oleg", "igor", "pavel", "yuri", "gleb", "lev", "roman", "ilya", "mark"]
    return _names(tmp_path / "names", {"Russian": [s + "ov" for s in stems], "Spanish": [s + "ez" for s in stems]})


def _cfg(tmp_path, data, **train):
    cfg = ClassifyRunConfig()
    cfg.data.data = str(data)
    cfg.data.val_fraction, cfg.data.test_fraction = 0.2, 0.2
    cfg.model = ModelConfig(cell="gru", hidden_size=24, num_layers=1, dropout=0.0, embedding_size=8)
    cfg.classifier.ensemble, cfg.classifier.input_dropout = 1, 0.0  # one small RNN: the tests read its parts
    cfg.optim.lr, cfg.optim.weight_decay = 0.02, 0.0
    cfg.train.batch_size = 8
    cfg.train.eval_interval = 20
    cfg.train.out = str(tmp_path / "run")
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_a_model_overfits_a_tiny_dataset_and_predictions_survive_a_reload(tmp_path):
    data = _tiny_names(tmp_path)
    cfg = _cfg(tmp_path, data, max_steps=80)
    cfg.data.val_fraction, cfg.data.test_fraction = 0.1, 0.1
    s = train_classifier(cfg, progress=False)
    assert s["stopped"] == "max_steps" and s["steps"] == 80
    r = evaluate_classifier(cfg.train.out, split="train")
    assert r["acc"] == 1.0  # every training example right
    assert s["test_acc"] == 1.0 and s["val_acc"] == 1.0  # the suffix rule generalises
    top = predict(cfg.train.out, ["novikov", "gomez"], top_k=2)
    assert [t["top"][0]["label"] for t in top] == ["Russian", "Spanish"]
    assert sum(t["prob"] for t in top[0]["top"]) == pytest.approx(1.0)
    # predictions from the saved checkpoint equal those of the model in memory before saving
    from rnnlab.checkpoint import load_checkpoint

    ckpt = load_checkpoint(cfg.train.out)
    model = ckpt.build_model()
    seqs = [ckpt.vocab.encode(t) for t in ("novikov", "gomez", "ivanez")]
    before = predict_proba(model, seqs)
    from rnnlab.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "copy.safetensors", model, ckpt.config, ckpt.vocab, extra=ckpt.extra)
    after = predict_proba(load_checkpoint(tmp_path / "copy.safetensors").build_model(), seqs)
    assert np.array_equal(before, after)


def test_an_ensemble_predicts_its_members_mean_probability_and_survives_a_reload(tmp_path):
    from rnnlab.classify import load_classifier
    from rnnlab.nn.classifier import ClassifierEnsemble

    cfg = _cfg(tmp_path, _tiny_names(tmp_path), max_steps=40)
    cfg.classifier.ensemble, cfg.classifier.label_smoothing, cfg.classifier.pool = 3, 0.1, "last,mean,last+mean"
    s = train_classifier(cfg, progress=False)
    assert s["steps"] == 40 and s["test_acc"] == 1.0, s
    model, ckpt = load_classifier(cfg.train.out)
    assert isinstance(model, ClassifierEnsemble) and model.members == 3
    assert [m.pool for m in model.members_] == ["last", "mean", "last+mean"]  # each member its own head
    assert [m.head.in_features for m in model.members_] == [2 * 24, 2 * 24, 4 * 24]
    a, b = (m.head.weight for m in model.members_[:2])
    assert not torch.equal(a, b)  # members start from their own weights
    seqs = [ckpt.vocab.encode(t) for t in ("novikov", "gomez", "ivanez")]
    x, lengths = (torch.from_numpy(v) for v in pad_batch(seqs))
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x, lengths), -1) for m in model.members_]).mean(0).double().numpy()
    assert np.allclose(predict_proba(model, seqs), mean, atol=1e-6)
    assert np.allclose(prefix_proba(model, seqs[0]), predict_proba(model, [seqs[0][:t] for t in range(1, 8)]),
                       atol=1e-6)
    from rnnlab.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "copy.safetensors", model, ckpt.config, ckpt.vocab, extra=ckpt.extra)
    again, _ = load_classifier(tmp_path / "copy.safetensors")
    assert isinstance(again, ClassifierEnsemble) and np.array_equal(predict_proba(again, seqs), predict_proba(model, seqs))


def test_input_dropout_zeroes_whole_steps_in_training_only():
    torch.manual_seed(0)
    model = RNNClassifier(ModelConfig(cell="gru", hidden_size=6, num_layers=1, dropout=0.0, embedding_size=4), 3,
                          vocab_size=5, input_dropout=0.5)
    seen = []
    model.rnn.register_forward_hook(lambda mod, args, kwargs_out: seen.append(args[0].detach().clone()))
    x, lengths = torch.randint(0, 5, (64, 7)), torch.full((64,), 7)
    model.train()
    model(x, lengths)
    e, full = seen[-1], model.embed(x).detach()
    dropped = (e == 0).all(-1)  # (B, T): a step is zeroed whole, or kept and scaled by 1/(1-p)
    assert 0.35 < dropped.float().mean() < 0.65
    assert torch.allclose(e[~dropped], 2.0 * full[~dropped])
    model.eval()
    model(x, lengths)
    assert torch.equal(seen[-1], full)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_language_model_loss_is_each_directions_next_token_cross_entropy(bidirectional):
    torch.manual_seed(0)
    cfg = ModelConfig(cell="gru", hidden_size=8, num_layers=1, dropout=0.0, embedding_size=5)
    model = RNNClassifier(cfg, num_classes=3, vocab_size=7, bidirectional=bidirectional, lm=True).double().eval()
    rng = np.random.default_rng(2)
    seqs = [rng.integers(0, 7, size=n) for n in (1, 4, 9, 2)]
    x, lengths = pad_batch(seqs)
    for b, n in enumerate(lengths):
        x[b, n:] = rng.integers(0, 7, size=x.shape[1] - n)  # padding that is not zero: it must not matter
    x, lengths = torch.from_numpy(x), torch.from_numpy(lengths)
    batched = model.lm_loss(model.states(x, lengths), x, lengths)
    total, count = 0.0, 0
    for s in seqs:  # by hand: each unpadded sequence as each direction reads it, every step predicting the next
        for d, read in enumerate([s, s[::-1]][:2 if bidirectional else 1]):
            rnn = model.rnn if d == 0 else model.rnn_reverse
            out = rnn(model.embed(torch.from_numpy(read.copy())[None]), fused=False)[0][0]  # (L, H)
            logp = torch.log_softmax(model.lm_heads[d](out), dim=-1)  # (L, V + 1)
            nxt = list(read[1:]) + [7]  # the end (id V = 7) after the last token
            total += -sum(logp[t, nxt[t]] for t in range(len(read)))
            count += len(read)
    assert torch.allclose(batched, total / count, atol=1e-12)
    logits, lm = model.train_outputs(x, lengths)
    assert torch.allclose(logits, model(x, lengths)) and torch.allclose(lm, batched)
    with pytest.raises(ValueError, match="token inputs"):
        RNNClassifier(cfg, num_classes=3, feature_size=4, lm=True)


def test_the_language_model_loss_trains_its_heads_which_survive_a_reload(tmp_path):
    from rnnlab.classify import load_classifier

    cfg = _cfg(tmp_path, _tiny_names(tmp_path), max_steps=60)
    cfg.classifier.lm_weight, cfg.train.log_interval = 0.5, 5
    s = train_classifier(cfg, progress=False)
    assert s["test_acc"] == 1.0, s
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lm = [r["lm"] for r in rows if r.get("split") == "train"]
    assert len(lm) >= 3 and lm[-1] < lm[0] - 0.5  # the heads learn the names' letters
    model, ckpt = load_classifier(cfg.train.out)
    assert model.lm_heads is not None and model.lm_heads[0].out_features == len(ckpt.vocab) + 1
    seqs = [ckpt.vocab.encode(t) for t in ("novikov", "gomez")]
    assert predict_proba(model, seqs).argmax(1).tolist() == [ckpt.labels.index("Russian"), ckpt.labels.index("Spanish")]
    cfg0 = _cfg(tmp_path, tmp_path / "names", max_steps=2, out=str(tmp_path / "off"))
    cfg0.classifier.lm_weight = 0.0
    train_classifier(cfg0, progress=False)
    model0, _ = load_classifier(cfg0.train.out)
    assert model0.lm_heads is None  # no heads, no parameters for them
    assert model0.num_parameters() < model.num_parameters()


def test_a_pool_list_gives_the_members_their_pools_in_turn():
    from rnnlab.config import member_pools

    assert member_pools("last+mean", 3) == ["last+mean"] * 3
    assert member_pools("last, mean", 3) == ["last", "mean", "last"]
    assert member_pools("last,mean,last+mean", 1) == ["last"]
    cfg = ClassifyRunConfig()
    cfg.data.builtin = "digits"
    for bad in ("last,max", "", "last,,mean"):
        cfg.classifier.pool = bad
        with pytest.raises(ConfigError, match="pool must be"):
            cfg.validate()


def test_a_stored_classifier_config_with_an_unknown_pool_is_refused_in_one_line(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from rnnlab.checkpoint import CheckpointError
    from rnnlab.classify import load_classifier

    cfg = _cfg(tmp_path, _tiny_names(tmp_path), max_steps=2)
    train_classifier(cfg, progress=False)
    path = tmp_path / "run" / "last.safetensors"
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    config["classifier"]["pool"] = "last,max"
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, bad, metadata={**meta, "config": json.dumps(config)})
    with pytest.raises(CheckpointError, match="stored config is invalid.*pool must be") as e:
        load_classifier(bad)
    assert "\n" not in str(e.value)


def test_bad_ensemble_and_dropout_options_are_refused():
    cfg = ClassifyRunConfig()
    cfg.data.builtin = "digits"
    cfg.classifier.ensemble, cfg.classifier.input_dropout, cfg.classifier.label_smoothing = 0, 1.0, -0.1
    cfg.classifier.lm_weight = -0.5
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert all(f"{k} must be" in str(e.value) for k in ("ensemble", "input_dropout", "label_smoothing", "lm_weight"))


def test_shifted_is_the_softmax_of_the_shifted_log_probabilities():
    from rnnlab.classify import shifted

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)) * 5
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    shift = rng.normal(size=4)
    expect = torch.softmax(torch.from_numpy(logits + shift), -1).numpy()
    assert np.allclose(shifted(probs, shift), expect, atol=1e-12) and shifted(probs, None) is probs


def _imbalanced_names(tmp_path):
    """Three classes, one rare, whose suffixes a small GRU half-learns in a few steps: room for the prior."""
    rng = np.random.default_rng(3)
    stems = ["".join(rng.choice(list("abdegiklmnoprstuv"), size=int(rng.integers(3, 7)))) for _ in range(400)]
    return _names(tmp_path / "imb", {"A": [s + "ov" for s in stems[:240]], "B": [s + "ev" for s in stems[240:370]],
                                     "C": [s + "in" for s in stems[370:]]})


def test_logit_adjustment_takes_the_best_tau_on_validation_and_the_checkpoint_keeps_it(tmp_path):
    from rnnlab.checkpoint import load_checkpoint
    from rnnlab.classify import TAUS, _prepare, encode_inputs, load_classifier, shifted

    data = _imbalanced_names(tmp_path)
    cfg = _cfg(tmp_path, data, max_steps=20, eval_interval=20)
    cfg.model.hidden_size, cfg.optim.lr = 8, 0.005
    cfg.classifier.adjust = "auto"
    s = train_classifier(cfg, progress=False)
    assert s["val_tau"] in TAUS
    # the oracle: every tau on the same validation probabilities, by brute force
    ckpt = load_checkpoint(cfg.train.out)
    raw_model = ckpt.build_model().eval()  # no shift: the plain softmax
    classes = ckpt.labels
    labelled, _, y_all, parts, _ = _prepare(ckpt.config, ckpt.vocab, classes)  # the split, re-made as the job made it
    val_seqs = encode_inputs([labelled.inputs[i] for i in parts["val"]], ckpt.vocab)
    y_val, y_train = y_all[parts["val"]], y_all[parts["train"]]
    raw = predict_proba(raw_model, val_seqs)
    log_prior = np.log(np.bincount(y_train, minlength=len(classes)) / len(y_train))
    totals = {}
    for tau in TAUS:
        pred = shifted(raw, -tau * log_prior).argmax(1)
        m = classification_metrics(y_val, pred, classes)
        totals[tau] = m["acc"] + m["balanced_acc"]
    assert totals[s["val_tau"]] == pytest.approx(max(totals.values()), abs=1e-12)
    assert min(t for t in TAUS if totals[t] >= max(totals.values()) - 1e-12) == s["val_tau"]  # the first best
    # the checkpoint keeps -tau log pi, and every prediction path applies it
    model, _ = load_classifier(cfg.train.out)
    assert np.allclose(model.logit_shift, -s["val_tau"] * log_prior, atol=1e-12)
    assert np.allclose(predict_proba(model, val_seqs), shifted(raw, -s["val_tau"] * log_prior), atol=1e-12)
    r = evaluate_classifier(cfg.train.out, split="val")
    assert r["acc"] + r["balanced_acc"] == pytest.approx(totals[s["val_tau"]], abs=1e-12)
    # adjust="none": the plain argmax, nothing kept
    cfg.classifier.adjust, cfg.train.out = "none", str(tmp_path / "plain")
    plain = train_classifier(cfg, progress=False)
    assert "val_tau" not in plain and load_classifier(cfg.train.out)[0].logit_shift is None


def test_the_default_logit_adjustment_is_a_fixed_tau_kept_in_the_checkpoint(tmp_path):
    from rnnlab.checkpoint import load_checkpoint
    from rnnlab.classify import _prepare, encode_inputs, load_classifier, shifted

    data = _imbalanced_names(tmp_path)
    cfg = _cfg(tmp_path, data, max_steps=20, eval_interval=20)
    cfg.model.hidden_size, cfg.optim.lr = 8, 0.005
    assert (cfg.classifier.adjust, cfg.classifier.tau, cfg.classifier.select) == ("fixed", 0.25, "last")
    cfg.classifier.tau = 0.75
    s = train_classifier(cfg, progress=False)
    assert s["val_tau"] == 0.75
    ckpt = load_checkpoint(cfg.train.out)
    labelled, _, y_all, parts, _ = _prepare(ckpt.config, ckpt.vocab, ckpt.labels)
    y_train = y_all[parts["train"]]
    log_prior = np.log(np.bincount(y_train, minlength=len(ckpt.labels)) / len(y_train))
    model, _ = load_classifier(cfg.train.out)
    assert np.allclose(model.logit_shift, -0.75 * log_prior, atol=1e-12)
    val_seqs = encode_inputs([labelled.inputs[i] for i in parts["val"]], ckpt.vocab)
    raw = predict_proba(ckpt.build_model().eval(), val_seqs)
    assert np.allclose(predict_proba(model, val_seqs), shifted(raw, -0.75 * log_prior), atol=1e-12)


def test_select_last_keeps_the_latest_weights_as_best(tmp_path):
    from safetensors.torch import load_file

    cfg = _cfg(tmp_path, _imbalanced_names(tmp_path), max_steps=60, eval_interval=10)
    cfg.model.hidden_size, cfg.optim.lr, cfg.classifier.select = 8, 0.05, "last"
    train_classifier(cfg, progress=False)
    out = tmp_path / "run" if not cfg.train.out else type(tmp_path)(cfg.train.out)
    best, last = (load_file(str(out / f"{k}.safetensors")) for k in ("best", "last"))
    assert best.keys() == last.keys() and all(torch.equal(best[k], last[k]) for k in best)
    vals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert len(vals) >= 6 and all(v["best"] for v in vals)  # every evaluation replaced best


@pytest.mark.parametrize("select, best_key", [("last", None), ("acc", "best_val_acc"), ("loss", "best_val_loss")])
def test_the_summary_reports_metrics_not_the_loops_ranking_key(tmp_path, select, best_key):
    cfg = _cfg(tmp_path, _tiny_names(tmp_path), max_steps=6, eval_interval=3)
    cfg.classifier.select = select
    s = train_classifier(cfg, progress=False)
    assert "val_criterion" not in s and "val_acc" in s
    assert [k for k in s if k.startswith("best_val_")] == ([best_key] if best_key else [])
    if select == "acc":  # the best of the two evaluations' validation accuracies
        out = type(tmp_path)(cfg.train.out)
        vals = [json.loads(line)["acc"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
        assert s["best_val_acc"] == pytest.approx(max(vals))


def test_the_progress_label_names_the_ensemble():
    from rnnlab.classify import ClassifierRecipe

    cfg = ClassifyRunConfig()
    assert ClassifierRecipe(cfg).desc() == "3 x bigru 1x128"  # the defaults: three bidirectional GRUs
    cfg.classifier.ensemble, cfg.classifier.bidirectional, cfg.model.cell = 1, False, "lstm"
    assert ClassifierRecipe(cfg).desc() == "lstm 1x128"


def test_a_resumed_run_with_nothing_left_to_train_says_so(tmp_path, capsys):
    cfg = _cfg(tmp_path, _tiny_names(tmp_path), max_steps=4, eval_interval=2)
    cfg.optim.decay_steps = 6  # the schedule's horizon, set now: the later, higher limit keeps it
    train_classifier(cfg, progress=False)
    assert "nothing to train" not in capsys.readouterr().out
    cfg.train.resume = True
    s = train_classifier(cfg, progress=False)
    assert s["steps"] == 4 and s["stopped"] == "max_steps"
    assert "nothing to train: the run had reached its step limit already; resume with a larger --max-steps" in \
        capsys.readouterr().out
    cfg.train.max_steps = 6  # a higher limit: it trains on, and says nothing of the kind
    assert train_classifier(cfg, progress=False)["steps"] == 6
    assert "nothing to train" not in capsys.readouterr().out


@pytest.mark.parametrize("tau", [-0.1, 1.5])
def test_a_tau_outside_zero_one_is_refused(tmp_path, tau):
    cfg = _cfg(tmp_path, _imbalanced_names(tmp_path), max_steps=1)
    cfg.classifier.tau = tau
    with pytest.raises(ConfigError, match="tau must be in"):
        train_classifier(cfg, progress=False)


def test_a_malformed_logit_adjustment_is_refused(tmp_path):
    from rnnlab.checkpoint import load_checkpoint, save_checkpoint
    from rnnlab.classify import load_classifier
    from rnnlab.errors import CheckpointError

    data = _tiny_names(tmp_path)
    cfg = _cfg(tmp_path, data, max_steps=2, eval_interval=2)
    train_classifier(cfg, progress=False)
    ckpt = load_checkpoint(cfg.train.out)
    for bad in ([0.0], [0.0, float("nan")], "x"):
        save_checkpoint(tmp_path / "bad.safetensors", ckpt.build_model(), ckpt.config, ckpt.vocab,
                        extra={**ckpt.extra, "logit_shift": bad})
        with pytest.raises(CheckpointError, match="logit adjustment is malformed"):
            load_classifier(tmp_path / "bad.safetensors")


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
    data = _tiny_names(tmp_path)
    whole = _cfg(tmp_path, data, max_steps=30, eval_interval=10, out=str(tmp_path / "whole"))
    whole.model.dropout = 0.2  # the RNG state must be restored too
    whole.optim.decay_steps = 30
    train_classifier(whole, progress=False)
    part = _cfg(tmp_path, data, max_steps=13, eval_interval=10, out=str(tmp_path / "part"))
    part.model.dropout, part.optim.decay_steps = 0.2, 30
    train_classifier(part, progress=False)  # stops mid-epoch (3 batches an epoch)
    part.train.max_steps, part.train.resume = 30, True
    train_classifier(part, progress=False)
    from rnnlab.checkpoint import load_checkpoint

    a, b = load_checkpoint(tmp_path / "whole" / "last.safetensors"), load_checkpoint(tmp_path / "part" / "last.safetensors")
    for k, v in a.model_state().items():
        assert torch.equal(v, b.model_state()[k]), k


def test_digits_builtin_trains_and_evaluates(tmp_path):
    cfg = ClassifyRunConfig()
    cfg.data.builtin = "digits"
    cfg.model = ModelConfig(cell="gru", hidden_size=32, num_layers=1, dropout=0.0)
    cfg.train.max_steps, cfg.train.eval_interval, cfg.train.out = 60, 60, str(tmp_path / "digits")
    s = train_classifier(cfg, progress=False)
    assert s["classes"] == 10 and sum(s["examples"].values()) == 1797
    assert s["test_acc"] > 0.5  # well above chance (0.1) after 60 steps
    png = tmp_path / "cm.png"
    r = evaluate_classifier(cfg.train.out, plot=png)
    assert r["examples"] == s["examples"]["test"] and r["acc"] == pytest.approx(s["test_acc"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.sum(r["confusion"]) == r["examples"]


# the command line ------------------------------------------------------------------------------

def test_cli_train_eval_predict(tmp_path, capsys):
    data = _tiny_names(tmp_path)
    out = tmp_path / "cli"
    assert main(["classify", "train", "--data", str(data), "--max-steps", "40", "--hidden-size", "16",
                 "--batch-size", "8", "--lr", "0.02", "--val-fraction", "0.2", "--test-fraction", "0.2",
                 "--out", str(out), "--quiet", "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["steps"] == 40 and "test_acc" in s
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["cell"] == "gru" and cfg["classifier"]["bidirectional"] is True  # the classifier defaults
    assert main(["classify", "eval", str(out), "--plot", str(tmp_path / "cm.png")]) == 0
    text = capsys.readouterr().out
    assert "balanced accuracy" in text and "true \\ predicted" in text and (tmp_path / "cm.png").exists()
    assert main(["classify", "predict", str(out), "ivanov", "lopez", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("ivanov\t")
    assert main(["classify", "predict", str(out), "Zoë"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rnnlab: error: ") and "never saw" in err and "Traceback" not in err
    assert main(["sample", str(out)]) == 1  # a classifier is not a language model
    assert "not a language model" in capsys.readouterr().err


def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys):
    one = _names(tmp_path / "one", {"x": ["a", "b", "c"]})
    assert main(["classify", "train", "--data", str(one), "--max-steps", "5", "--out", str(tmp_path / "r")]) == 1
    assert "one class only" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["classify", "train", "--max-steps", "5", "--out", str(tmp_path / "r")]) == 2
    assert "no data" in capsys.readouterr().err
    assert main(["classify", "train", "--builtin", "digits", "--hidden-size", "0", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "hidden_size must be >= 1" in err and "no stop condition" in err


def test_a_warning_is_one_line_on_the_command_line(tmp_path):
    import subprocess
    import sys

    data = _names(tmp_path / "thin", {"big": [f"n{i}" for i in range(30)], "thin": ["a", "b"]})
    r = subprocess.run([sys.executable, "-m", "rnnlab", "classify", "train", "--data", str(data), "--max-steps", "2",
                        "--hidden-size", "4", "--out", str(tmp_path / "r"), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    warning = [line for line in r.stderr.splitlines() if "warning" in line]
    assert warning == ["rnnlab: warning: 1 class(es) have fewer than 3 distinct inputs and are not in the held-out splits"]


def test_the_data_layer_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, rnnlab.data.sequences, rnnlab.metrics; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# found in review: paths, changed data, outputs, table files -----------------------------------

def test_a_run_finds_its_data_from_any_folder_and_refuses_changed_data(tmp_path, monkeypatch, capsys):
    """A relative --data is stored absolute: eval and resume work from another folder, an equivalent path
    is the same data on resume; data changed since training are refused instead of re-split."""
    (tmp_path / "d").mkdir()
    stems = ["ivan", "petr", "boris", "oleg", "igor", "pavel", "yuri", "gleb", "lev", "roman"]
    (tmp_path / "d" / "q.csv").write_text("text,label\n" + "".join(f"{s}ov,ru\n{s}ez,es\n" for s in stems))
    monkeypatch.chdir(tmp_path / "d")
    assert main(["classify", "train", "--data", "q.csv", "--max-steps", "4", "--hidden-size", "8",
                 "--val-fraction", "0.2", "--test-fraction", "0.2", "--out", "../run", "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["data"] == str(tmp_path / "d" / "q.csv")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["classify", "eval", "run"]) == 0
    assert main(["classify", "train", "--out", "run", "--resume", "--max-steps", "6", "--data", "d/q.csv",
                 "--quiet"]) == 0
    with open(tmp_path / "d" / "q.csv", "a") as f:
        f.write("glebev,ru\n")
    capsys.readouterr()
    assert main(["classify", "eval", "run"]) == 1
    err = capsys.readouterr().err
    assert "has changed since the run" in err and len(err.strip().splitlines()) == 1
    assert main(["classify", "eval", "run", "--data", "d/q.csv"]) == 0  # another file scored whole: allowed


def test_eval_scores_a_file_of_one_class_that_training_refuses(tmp_path):
    cfg = _cfg(tmp_path, _tiny_names(tmp_path), max_steps=60, eval_interval=30)
    train_classifier(cfg, progress=False)
    one = _names(tmp_path / "one", {"Spanish": ["pavelez", "borisez", "yuriez", "glebez"]})
    r = evaluate_classifier(cfg.train.out, data=str(one))
    confusion = np.asarray(r["confusion"])  # rows: the true class
    assert r["examples"] == 4 and confusion.sum() == 4
    assert confusion[0].sum() == 0 and confusion[1].sum() == 4  # every example is Spanish (class 1)
    cfg.data.data, cfg.train.out = str(one), str(tmp_path / "again")
    with pytest.raises(DataError, match="holds one class only"):
        train_classifier(cfg, progress=False)


def test_eval_refuses_vectors_of_another_width_and_an_unwritable_plot(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [{"text": rng.normal(size=(3, 4)).tolist(), "label": str(i % 2)} for i in range(40)]
    (tmp_path / "v.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["classify", "train", "--data", str(tmp_path / "v.jsonl"), "--max-steps", "2", "--hidden-size", "4",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    (tmp_path / "w.jsonl").write_text("".join(json.dumps({"text": [[1.0, 2.0, 3.0]], "label": str(i % 2)}) + "\n"
                                              for i in range(4)))
    capsys.readouterr()
    assert main(["classify", "eval", str(tmp_path / "run"), "--data", str(tmp_path / "w.jsonl")]) == 1
    assert "vectors of 4 numbers a step, the data hold 3" in capsys.readouterr().err
    for plot, says in ((tmp_path / "no" / "cm.png", "does not exist"), (tmp_path, "it is a folder")):
        assert main(["classify", "eval", str(tmp_path / "run"), "--plot", str(plot)]) == 1
        captured = capsys.readouterr()
        assert says in captured.err and len(captured.err.strip().splitlines()) == 1 and captured.out == ""


def test_csv_fields_keep_their_line_ends_and_may_be_long(tmp_path):
    long = "q" * 200_000  # over the csv module's default field limit
    (tmp_path / "d.csv").write_bytes(f'text,label\r\n"a\nb",x\r\nplain\x0cpage,y\r\n"{long}",x\r\n'.encode())
    d = read_labelled(str(tmp_path / "d.csv"))
    assert d.inputs == ["a\nb", "plain\x0cpage", long] and d.labels == ["x", "y", "x"]
    (tmp_path / "e.csv").write_text('text,label\n"a\nb",x\nshort\n')
    with pytest.raises(DataError, match="line 4 has fewer fields"):  # the line the row is on, counting line ends
        read_labelled(str(tmp_path / "e.csv"))


def test_predict_names_the_right_text_and_refuses_blank_ones(tmp_path):
    data = _tiny_names(tmp_path)
    cfg = _cfg(tmp_path, data, max_steps=2)
    train_classifier(cfg, progress=False)
    with pytest.raises(DataError, match=r"text 3 \(''\) is empty"):
        predict(cfg.train.out, ["ivanov", "lopez", ""])
    with pytest.raises(DataError, match=r"the text \('   '\) is empty or only white space"):
        predict(cfg.train.out, ["   "])

"""Property-based tests (hypothesis): arbitrary text, bytes and sampler settings."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.data import Vocab
from rnnlab.data.corpus import decode_text
from rnnlab.decoding import Sample, distribution
from rnnlab.errors import ConfigError, DataError, VocabError

TEXT = st.text(min_size=1, max_size=200)


@given(TEXT)
def test_char_vocab_round_trips_any_text(text):
    v = Vocab.from_text(text)
    assert v.decode(v.encode(text)) == text
    assert Vocab.from_dict(v.to_dict()) == v


@given(TEXT, TEXT)
def test_encode_refuses_exactly_the_unseen_characters(a, b):
    v = Vocab.from_text(a)
    unseen = set(b) - set(a)
    try:
        v.encode(b)
        assert not unseen
    except VocabError as e:
        assert unseen and all(repr(c) in str(e) for c in sorted(unseen)[:10])


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_give_a_data_error(raw):
    try:
        text = decode_text(raw, "input")
        assert text
    except DataError as e:
        assert str(e).startswith("input ")


@settings(max_examples=200)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=30),
       st.floats(0.05, 20), st.integers(0, 40), st.floats(0.01, 1.0))
def test_distribution_is_a_distribution_over_the_kept_set(logits, temperature, top_k, top_p):
    z = np.array([logits])
    p = distribution(z, temperature, top_k, top_p)
    assert np.isclose(p.sum(), 1.0) and (p >= 0).all()
    assert p[0, int(np.argmax(z))] > 0  # the most probable token is never dropped
    if 0 < top_k < len(logits):
        assert (p > 0).sum() <= top_k
    ids = Sample(temperature, top_k, top_p).choose(np.repeat(z, 20, 0), np.random.default_rng(0))
    assert (p[0, ids] > 0).all()


@given(st.floats(allow_nan=True), st.integers(-3, 3), st.floats(allow_nan=True))
def test_sampler_settings_are_valid_or_a_config_error(temperature, top_k, top_p):
    try:
        Sample(temperature, top_k, top_p)
    except ConfigError:
        pass

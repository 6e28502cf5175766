"""Continuous batching (rnnlab.scheduler): the batched draws are the library's draws, row by row; a stream's text
in a batch, with others joining and leaving, is its text alone and the text ``rnnlab sample`` (rnnlab.sampling.
generate) gives with its seed -- any difference must be a draw within rounding of a boundary of the distribution
function, and those are counted apart; every stream present advances one token per round."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlab.config import ModelConfig, SampleConfig
from rnnlab.data.vocab import Vocab
from rnnlab.decoding import distribution, make_sampler
from rnnlab.errors import ConfigError
from rnnlab.nn import kernels
from rnnlab.nn.models import Decider, RNNLanguageModel
from rnnlab.sampling import encode_prime, generate
from rnnlab.scheduler import Scheduler, Stream, choose

TEXT = "the cat sat on the mat. the dog sat on the log; a cat and a dog met!\n"


class Recorded(Stream):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.tokens: list[int] = []
        self.rounds: list[int] = []  # the round of each token
        self.finished = False
        self.scheduler: Scheduler | None = None

    def deliver(self, token: int, probs: np.ndarray) -> None:
        assert probs.shape == (len(VOCAB),) and abs(probs.sum() - 1) < 1e-9
        self.tokens.append(token)
        self.rounds.append(self.scheduler.rounds if self.scheduler else -1)

    def finish(self) -> None:
        assert not self.finished
        self.finished = True


VOCAB = Vocab.from_text(TEXT)


def model(cell: str = "lstm", hidden: int = 64, layers: int = 2, seed: int = 0) -> RNNLanguageModel:
    torch.manual_seed(seed)
    m = RNNLanguageModel(ModelConfig(cell=cell, hidden_size=hidden, num_layers=layers, dropout=0.0,
                                     embedding_size=16), len(VOCAB)).eval()
    with torch.no_grad():  # sharper than the initialisation, so samples have structure
        m.decoder.weight.mul_(8)
    return m


def stream(prime: str, length: int, seed: int, **kw) -> Recorded:
    return Recorded(encode_prime(VOCAB, prime), length, seed=seed, **kw)


def sample_kw(s: Stream) -> dict:
    return {"strategy": s.strategy, "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p}


def run(sch: Scheduler, events: dict[int, list], limit: int = 10_000) -> None:
    """Rounds until every stream is done; ``events[r]`` (callables) run before round r."""
    r = 0
    while r < limit:
        for ev in events.get(r, []):
            ev()
        if not sch.round() and r > max(events, default=0):
            return
        r += 1
    raise AssertionError("the scheduler did not finish")


# --- the draws -------------------------------------------------------------------------------------------
SETTINGS = [{"strategy": "sample"}, {"strategy": "sample", "temperature": 0.5},
            {"strategy": "sample", "temperature": 2.0, "top_k": 3}, {"strategy": "sample", "top_p": 0.7},
            {"strategy": "argmax"}, {"strategy": "sample", "temperature": 0.01},
            {"strategy": "sample", "top_k": 5, "top_p": 0.9, "temperature": 1.3}]


def test_batched_draws_are_the_samplers_draws_row_by_row():
    rng = np.random.default_rng(0)
    streams = [Stream(np.zeros(1, np.int64), 10, seed=100 + i, **kw) for i, kw in enumerate(SETTINGS)]
    settings = np.array([s.settings for s in streams])
    oracles = [(make_sampler(kw["strategy"], kw.get("temperature", 1.0), kw.get("top_k", 0), kw.get("top_p", 1.0)),
                np.random.default_rng(100 + i)) for i, kw in enumerate(SETTINGS)]
    for _ in range(50):
        logits = rng.normal(0, 3, (len(streams), 40))
        u = np.array([0.0 if s.strategy == "argmax" else s.rng.random() for s in streams])  # one per token
        got = choose(logits, settings, u)
        want = [int(s.choose(logits[i:i + 1], r)[0]) for i, (s, r) in enumerate(oracles)]
        assert got.tolist() == want


@pytest.mark.skipif(not kernels.available(), reason="the C++ kernels are not built here")
def test_the_cpp_loop_draws_each_row_as_its_settings_say_from_the_logits_it_returns():
    """Decider.rows, the scheduler's steps on the CPU: its logits are the model's step's (float64), and each row's
    draw is choose's -- temperature, top-k and top-p included -- with that row's uniform."""
    m = model(hidden=32).double()
    b, t = len(SETTINGS), 60
    settings = torch.tensor([Stream(np.zeros(1, np.int64), 1, **kw).settings for kw in SETTINGS], dtype=torch.float64)
    u = torch.from_numpy(np.random.default_rng(1).random((t - 1, b)))
    x = torch.zeros(b, t, dtype=torch.int64)
    x[:, 0] = torch.arange(b)
    fed, end, logits = Decider(m, b).rows(x, m.initial_state(b), settings, u)
    assert fed.shape == (b, t) and logits.shape == (t - 1, b, len(VOCAB))
    state = m.initial_state(b)
    with torch.no_grad():
        for k in range(1, t):
            z, state = m.step(fed[:, k - 1], state)
            torch.testing.assert_close(logits[k - 1], z, rtol=0, atol=1e-10)
            want = choose(z.numpy(), settings.numpy(), u[k - 1].numpy())
            assert fed[:, k].tolist() == want.tolist(), k
    for mine, theirs in zip(end, state):
        for a, c in zip(mine, theirs):
            torch.testing.assert_close(a, c, rtol=0, atol=1e-10)
    with pytest.raises(RuntimeError, match="settings"):
        Decider(m, b).rows(x, m.initial_state(b), settings[:, :3].contiguous(), u)
    with pytest.raises(RuntimeError, match="needs u"):
        Decider(m, b).rows(x, m.initial_state(b), settings)


def test_a_stream_checks_its_settings():
    for kw, words in (({"strategy": "beam"}, "samples or takes the argmax"), ({"temperature": 0.0}, "temperature"),
                      ({"top_p": 0.0}, "top_p")):
        with pytest.raises(ConfigError, match=words):
            Stream(np.zeros(1, np.int64), 3, **kw)
    with pytest.raises(ConfigError, match="at least one token"):
        Stream(np.zeros(0, np.int64), 3)


# --- a batch gives each stream its own text ----------------------------------------------------------------
def explained(m: RNNLanguageModel, s: Recorded, prime: str, want: list[int], tol: float = 1e-5) -> bool:
    """Whether the first difference between ``s.tokens`` and ``want`` is a draw within rounding of a boundary:
    for sampling, u times the total lies within ``tol`` of the cumulative probability between the two tokens;
    for argmax, the two logits are within ``tol`` of each other."""
    t = next(k for k, (a, b) in enumerate(zip(s.tokens, want)) if a != b)
    ids = torch.as_tensor(np.concatenate([encode_prime(VOCAB, prime), np.asarray(want[:t], np.int64)]))
    with torch.no_grad():
        z = m(ids.unsqueeze(0))[0][0, -1].double().numpy()  # (V,)
    a, b = sorted((s.tokens[t], want[t]))
    if s.strategy == "argmax":
        return abs(z[a] - z[b]) < tol
    rng = np.random.default_rng(s.seed)
    u = rng.random(t + 1)[t]  # the stream's (t+1)-th uniform: one per token
    cum = np.cumsum(distribution(z[None], s.temperature, s.top_k, s.top_p)[0])
    # a is drawn where u * total < cum[a], b where cum[b - 1] <= u * total: only a draw at the boundary between
    # them, with (almost) no mass on the tokens in between, can go either way
    return abs(cum[a] - u * cum[-1]) < tol and cum[b - 1] - cum[a] < tol


@pytest.mark.parametrize("cell, steps", [("lstm", 1), ("lstm", 6), ("gru", 3), ("elman", 1)])
def test_streams_joining_and_leaving_get_their_solo_text_and_rnnlab_sample_text(cell, steps):
    m = model(cell)
    long_prime = (TEXT * 12)[:700]  # read over 11 rounds of 64 tokens
    specs = [  # (round it joins, prime, length, seed, settings, round it is cancelled or None)
        (0, "the cat", 60, 1, {}, None),
        (0, "a dog", 60, 2, {"temperature": 0.7}, None),
        (0, "", 30, 3, {"strategy": "argmax"}, None),
        (3, long_prime, 40, 4, {"top_k": 4}, None),
        (5, "the ", 5, 5, {"top_p": 0.8, "temperature": 1.2}, None),  # leaves after 5 tokens
        (8, "met", 50 * steps, 6, {}, 20),  # cancelled mid-way: its first tokens still its own
        (25, "log", 30, 7, {"temperature": 1.5}, None),  # joins late, after others left
        (25, "sat", 1, 8, {}, None),
        (26, "t", 12, 9, {"strategy": "argmax"}, None),  # a prime of one token: nothing to read
    ]
    sch = Scheduler(m, start=False, steps=steps)
    streams, events = [], {}
    for join, prime, length, seed, kw, cancel in specs:
        s = stream(prime, length, seed, **kw)
        s.scheduler = sch
        streams.append(s)
        events.setdefault(join, []).append(lambda s=s: sch.add(s))
        if cancel is not None:
            events.setdefault(cancel, []).append(s.cancel)
    run(sch, events)
    assert sch.active == [] and sch.reading == [] and sch.state is None
    rounding = 0
    for (_, prime, length, seed, kw, cancel), s in zip(specs, streams):
        if cancel is None:
            assert s.finished and len(s.tokens) == length
        else:
            assert not s.finished and 0 < len(s.tokens) < length
        text = generate(m, VOCAB, SampleConfig(prime=prime, length=length, seed=seed, **kw))[0]  # rnnlab sample
        want = VOCAB.encode(text[len(prime):]).tolist() if VOCAB.level == "char" else None
        alone = stream(prime, length, seed, **kw)
        solo = Scheduler(m, start=False, steps=1)
        solo.add(alone)
        run(solo, {})
        for other in (want, alone.tokens):
            if s.tokens != other[:len(s.tokens)]:
                assert explained(m, s, prime, other), (cell, seed, s.tokens, other)
                rounding += 1
    print(f"{cell}, {steps} step(s) a round: {rounding} difference(s) within rounding")
    first = streams[0]  # the check itself tells a real difference from rounding
    wrong = list(first.tokens)
    wrong[7] = (wrong[7] + len(VOCAB) // 2) % len(VOCAB)
    assert not explained(m, first, specs[0][1], wrong)
    assert rounding <= 1, f"{rounding} differences within rounding: more than rounding makes likely"


def per_round(s: Recorded) -> dict[int, int]:
    """How many tokens ``s`` received in each round."""
    out: dict[int, int] = {}
    for r in s.rounds:
        out[r] = out.get(r, 0) + 1
    return out


def test_every_stream_in_the_batch_advances_the_same_steps_and_a_joining_stream_draws_in_the_next_round():
    """A stream's first token comes from its prime's logits at the start of the round it joins, then it advances
    the round's steps with the others: one more token than the others in that round, the same after."""
    m = model()
    sch = Scheduler(m, prime_chunk=100, start=False, steps=4)
    a, b = stream("the cat", 30, 1), stream("a dog", 22, 2)  # primes of different lengths, read in one round
    readers = [stream((TEXT * 10)[:451], 10, 3), stream((TEXT * 10)[:151], 10, 4)]  # 5 and 2 chunks of 100
    late = stream("the", 9, 5)
    for s in (a, b, *readers, late):
        s.scheduler = sch
    run(sch, {0: [lambda: sch.add(a), lambda: sch.add(b)], 2: [lambda r=r: sch.add(r) for r in readers],
              3: [lambda: sch.add(late)]})
    # a and b drew their first tokens in the round they joined (1, as sch.rounds counts), then 4 a round, none
    # skipped while the long primes were read or others joined
    assert per_round(a) == {1: 5} | {r: 4 for r in range(2, 8)} | {8: 1}
    assert per_round(b) == {1: 5} | {r: 4 for r in range(2, 6)} | {6: 1}
    # the readers joined before round 3; 100 tokens of each prime a round: the second reader drew in round 4,
    # the first in round 7; the late stream joined before round 4 and drew in it
    assert per_round(readers[1]) == {4: 5, 5: 4, 6: 1} and per_round(readers[0]) == {7: 5, 8: 4, 9: 1}
    assert per_round(late) == {4: 5, 5: 4}
    assert sch.round_steps == [4] * 8 + [1]  # the last round: as many as the one stream left still needs


def test_a_lone_stream_takes_many_steps_a_round_and_writes_the_same_text_and_probabilities():
    m = model()

    class Probs(Recorded):
        def deliver(self, token: int, probs: np.ndarray) -> None:
            super().deliver(token, probs)
            self.probs = [*getattr(self, "probs", []), probs]

    runs = {}
    for name, kw in (("one step a round", {"steps": 1}), ("as many as fit in a long round", {"round_seconds": 60.0}),
                     ("as many as fit in a tiny round", {"round_seconds": 1e-9})):
        sch = Scheduler(m, start=False, **kw)
        s = Probs(encode_prime(VOCAB, "the cat"), 150, seed=3, temperature=0.8)
        s.scheduler = sch
        sch.add(s)
        run(sch, {})
        runs[name] = s, sch.round_steps
    one, _ = runs["one step a round"]
    many, steps = runs["as many as fit in a long round"]
    # the first token from the prime; the first round measures a step; then as many as the stream needs, at
    # most 64 a round
    assert steps == [1, 64, 64, 20] and len(many.tokens) == 150
    assert many.tokens == one.tokens
    np.testing.assert_array_equal(np.array(many.probs), np.array(one.probs))
    assert runs["as many as fit in a tiny round"][1] == [1] * 149


def test_a_stream_joining_a_lone_stream_mid_way_waits_one_round_then_both_advance_together():
    m = model()
    sch = Scheduler(m, start=False, steps=16)
    first, second = stream("the cat", 100, 1), stream("a dog sat", 40, 2, top_k=5)
    for s in (first, second):
        s.scheduler = sch
    run(sch, {0: [lambda: sch.add(first)], 3: [lambda: sch.add(second)]})
    assert per_round(first) == {1: 17} | {r: 16 for r in range(2, 7)} | {7: 3}
    assert per_round(second) == {4: 17, 5: 16, 6: 7}  # added between rounds 3 and 4: its first tokens in round 4
    for s, prime in ((first, "the cat"), (second, "a dog sat")):
        want = generate(m, VOCAB, SampleConfig(prime=prime, length=s.length, seed=s.seed, **sample_kw(s)))[0]
        assert prime + VOCAB.decode(s.tokens) == want or explained(m, s, prime, VOCAB.encode(want[len(prime):]))


def test_the_python_steps_give_the_cpp_loops_text():
    """Where the C++ loop is not built (or on a GPU) the packed step runs from Python, with the same draws."""
    m = model()
    texts = {}
    for where in ("kernel", "python"):
        if where == "python":
            with kernels.disabled():
                sch = Scheduler(m, start=False, steps=5)
            assert not sch.kernel
        else:
            sch = Scheduler(m, start=False, steps=5)
            if not sch.kernel:
                pytest.skip("the C++ kernels are not built here")
        streams = [stream("the cat", 33, 1), stream("a dog", 20, 2, top_p=0.8), stream("", 25, 3, strategy="argmax"),
                   stream("met", 30, 4, top_k=4, temperature=1.4)]
        run(sch, {0: [lambda s=s, q=sch: q.add(s) for s in streams[:2]],
                  2: [lambda s=s, q=sch: q.add(s) for s in streams[2:]]})
        texts[where] = [s.tokens for s in streams]
    differ = sum(a != b for a, b in zip(texts["kernel"], texts["python"]))
    assert differ <= 1, texts  # at most a draw within rounding of a boundary


def test_a_scheduler_thread_serves_streams_added_from_other_threads():
    import threading

    m = model(hidden=32)
    sch = Scheduler(m)
    done = threading.Event()
    streams = []

    class Counted(Recorded):
        def finish(self) -> None:
            super().finish()
            if all(s.finished for s in streams):
                done.set()

    streams.extend(Counted(encode_prime(VOCAB, "the"), 20 + k, seed=k) for k in range(6))
    try:
        for s in streams:
            sch.add(s)
        assert done.wait(30)
        assert [len(s.tokens) for s in streams] == [20 + k for k in range(6)]
        differ = [k for k, s in enumerate(streams)
                  if "the" + VOCAB.decode(s.tokens) != generate(m, VOCAB, SampleConfig(prime="the", length=20 + k,
                                                                                       seed=k))[0]]
        assert len(differ) <= 1  # at most a draw within rounding of a boundary
    finally:
        sch.close()


def test_a_failing_model_ends_every_stream_with_a_message():
    m = model(hidden=16)
    sch = Scheduler(m)
    messages = []
    import threading
    ended = threading.Event()

    class Failing(Stream):
        def fail(self, message: str) -> None:
            messages.append(message)
            if len(messages) == 2:
                ended.set()

    def broken(*a, **k):
        raise RuntimeError("out of memory\nmore")

    sch._advance = broken  # the batched steps fail
    try:
        for k in range(2):
            sch.add(Failing(encode_prime(VOCAB, "the"), 5, seed=k))
        assert ended.wait(30)
        assert messages == ["generation failed: RuntimeError: out of memory"] * 2
        assert sch.size == 0
    finally:
        sch.close()

"""Feeding strategies: teacher forcing against the job's loss, scheduled sampling at its two ends against
teacher forcing and free running, what free running feeds and where its gradient flows, the schedules at
their defining points, professor forcing's discriminator, gate and checkpointed state, and a contract suite
over every strategy."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from rnnlab.config import FeedingConfig, ModelConfig
from rnnlab.errors import CheckpointError, ConfigError
from rnnlab.feeding import (
    FEEDINGS,
    Discriminator,
    FreeRunning,
    ProfessorForcing,
    ScheduledSampling,
    TeacherForcing,
    exponential,
    inverse_sigmoid,
    linear,
    make_feeding,
    make_schedule,
    own_inputs,
    teacher_probability,
)
from rnnlab.feeding import _model_token
from rnnlab.nn.models import RNNLanguageModel, sequence_loss
from rnnlab.nn.stack import detach_state

D = torch.float64
V, B, T = 7, 3, 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices, and a shared machine
    yield
    torch.set_num_threads(threads)


def _model(cell: str = "gru", input: str = "embedding", layers: int = 2, seed: int = 0) -> RNNLanguageModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(cell=cell, hidden_size=8, num_layers=layers, dropout=0.0, input=input, embedding_size=5)
    return RNNLanguageModel(cfg, V).to(D)


def _batch(model: RNNLanguageModel, seed: int = 1, t: int = T):
    """x, y (B, t) from one stream each, and a non-zero carried start state."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, t + 5), generator=g)
    with torch.no_grad():
        _, state = model(ids[:, :4], model.initial_state(B))
    return ids[:, 4:-1], ids[:, 5:], detach_state(state)


def _grads(model: RNNLanguageModel, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters()), allow_unused=True))


def _close(a, b, tol: float = 1e-10) -> bool:
    return all((x is None and y is None) or torch.allclose(x, y, rtol=0, atol=tol) for x, y in zip(a, b))


def _gen(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _record(monkeypatch, model: RNNLanguageModel) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Wrap model.step: every call's (input, logits) is appended to the returned list."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    step = model.step

    def recording(token, state):
        logits, state = step(token, state)
        calls.append((token, logits))
        return logits, state

    monkeypatch.setattr(model, "step", recording)
    return calls


def _replay(model: RNNLanguageModel, x: torch.Tensor, state, mode: str, gen: torch.Generator | None = None,
            truth: torch.Tensor | None = None) -> torch.Tensor:
    """The oracle: the inputs (B, T) a self-fed run reads, by hand, one ``model.step`` at a time."""
    fed, s = [x[:, 0]], state
    u = torch.rand((x.shape[1] - 1, x.shape[0]), generator=gen, dtype=D) if mode == "sample" else None
    with torch.no_grad():
        for t in range(1, x.shape[1]):
            logits, s = model.step(fed[-1], s)  # (B, V)
            if mode == "argmax":
                own = logits.argmax(-1)
            else:  # the first k whose cumulative probability exceeds u, row by row
                p = F.softmax(logits.double(), dim=-1).tolist()
                own = torch.tensor([next(k for k in range(V) if sum(row[:k + 1]) > ub * sum(row))
                                    for row, ub in zip(p, u[t - 1].tolist())])
            fed.append(own if truth is None else torch.where(truth[:, t - 1], x[:, t], own))
    return torch.stack(fed, dim=1)


def test_a_draw_follows_the_softmax():
    """Inverse-CDF draws from fixed logits: frequencies within 5 standard errors of softmax, and a token
    of probability 0 never drawn."""
    logits = torch.tensor([2.0, -1.0, 0.5, float("-inf"), 1.0, -3.0, 0.0])
    p = F.softmax(logits.double(), dim=-1)
    n = 200_000
    u = torch.rand(n, generator=_gen(0), dtype=D)
    k = _model_token(logits.expand(n, V), "sample", u)
    freq = torch.bincount(k, minlength=V).double() / n
    assert freq[3] == 0.0
    assert torch.all((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-12)
    edge = _model_token(logits.expand(3, V), "sample", torch.tensor([0.0, 0.5, 1 - 2**-53], dtype=D))
    assert edge.tolist() == [0, int(torch.searchsorted(p.cumsum(0), torch.tensor(0.5, dtype=D), right=True)), 6]


def _teacher_on(model: RNNLanguageModel, fed: torch.Tensor, y: torch.Tensor, state) -> torch.Tensor:
    logits, _ = model(fed, state)
    return sequence_loss(logits, y)


@pytest.mark.parametrize("cell", ["elman", "elman-relu", "lstm", "gru"])
@pytest.mark.parametrize("input", ["embedding", "onehot"])
@pytest.mark.parametrize("mode", ["argmax", "sample"])
def test_own_inputs_are_what_a_hand_loop_of_steps_feeds(cell, input, mode):
    model = _model(cell, input)
    x, _, state = _batch(model, t=15)
    fed = own_inputs(model, x, state, mode, _gen(4))
    assert fed.shape == x.shape and torch.equal(fed[:, 0], x[:, 0]) and not torch.equal(fed, x)
    assert torch.equal(fed, _replay(model, x, state, mode, _gen(4)))
    truth = torch.rand(B, x.shape[1] - 1, generator=_gen(8)) < 0.5
    assert torch.equal(own_inputs(model, x, state, mode, _gen(4), truth), _replay(model, x, state, mode, _gen(4), truth))


def test_own_inputs_are_decided_without_dropout():
    """The tokens come from the model as it generates (eval mode), whatever mode it trains in."""
    torch.manual_seed(0)
    cfg = ModelConfig(cell="lstm", hidden_size=16, num_layers=2, dropout=0.5, embedding_size=5)
    model = RNNLanguageModel(cfg, V).to(D).train()
    x, _, state = _batch(model, t=20)
    fed = own_inputs(model, x, state, "argmax")
    assert model.training  # left as it was
    assert torch.equal(fed, _replay(model.eval(), x, state, "argmax"))


# teacher forcing and scheduled sampling at its ends ------------------------------------------------

def test_teacher_forcing_is_the_language_model_jobs_loss():
    model = _model()
    x, y, state = _batch(model)
    r = TeacherForcing().loss(model, x, y, state, step=0)
    logits, ref_state = model(x, state)
    assert torch.equal(r.loss, sequence_loss(logits, y))
    assert all(torch.equal(a, b) for la, lb in zip(r.state, ref_state) for a, b in zip(la, lb))
    assert r.nll == r.loss.item() and r.logs == {}


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
@pytest.mark.parametrize("input", ["embedding", "onehot"])
def test_scheduled_sampling_at_eps_one_is_teacher_forcing(cell, input):
    model = _model(cell, input)
    x, y, state = _batch(model)
    tf = TeacherForcing().loss(model, x, y, state, step=0)  # the fused path
    ss = ScheduledSampling(lambda i: 1.0).loss(model, x, y, state, step=123, generator=_gen())
    assert abs(tf.loss.item() - ss.loss.item()) < 1e-10
    assert _close(_grads(model, tf.loss), _grads(model, ss.loss))
    assert _close([t for layer in tf.state for t in layer], [t for layer in ss.state for t in layer])
    assert ss.logs == {"eps": 1.0, "teacher_frac": 1.0}


@pytest.mark.parametrize("token", ["sample", "argmax"])
@pytest.mark.parametrize("per", ["token", "sequence"])
def test_scheduled_sampling_at_eps_zero_is_free_running(token, per):
    model = _model("lstm")
    x, y, state = _batch(model)
    fr = FreeRunning(token).loss(model, x, y, state, step=0, generator=_gen(7))
    ss = ScheduledSampling(lambda i: 0.0, model_token=token, per=per).loss(model, x, y, state, step=9,
                                                                             generator=_gen(7))
    assert torch.equal(fr.loss, ss.loss)
    assert all(torch.equal(a, b) for a, b in zip(_grads(model, fr.loss), _grads(model, ss.loss)))
    assert all(torch.equal(a, b) for la, lb in zip(fr.state, ss.state) for a, b in zip(la, lb))
    assert ss.logs["teacher_frac"] == 0.0


@pytest.mark.parametrize("per", ["token", "sequence"])
@pytest.mark.parametrize("token", ["argmax", "sample"])
def test_scheduled_sampling_feeds_the_truth_where_its_coin_says(per, token):
    """Its loss and gradient are teacher forcing's on the inputs a hand loop feeds: the truth where the
    coin (drawn first from the generator) fell 1, else the model's own token."""
    model = _model()
    x, y, state = _batch(model, t=12)
    eps = 0.5
    r = ScheduledSampling(make_schedule("linear", k=eps, c=0.0), model_token=token, per=per).loss(
        model, x, y, state, step=40, generator=_gen(3))
    shape = (B, 1) if per == "sequence" else (B, x.shape[1] - 1)
    replay = _gen(3)
    coins = (torch.rand(shape, generator=replay, dtype=D) < eps).expand(B, x.shape[1] - 1)
    fed = _replay(model, x, state, token, replay, coins)
    assert not torch.equal(fed, x) and not torch.equal(fed, _replay(model, x, state, token, _gen(3)))
    ref = _teacher_on(model, fed, y, state)
    assert abs(r.loss.item() - ref.item()) < 1e-12
    assert _close(_grads(model, r.loss), _grads(model, ref))
    assert 0.0 < r.logs["teacher_frac"] < 1.0 and r.logs["teacher_frac"] == coins.double().mean().item()
    assert r.logs["eps"] == eps


# schedules ---------------------------------------------------------------------------------------------

def test_the_schedules_at_their_defining_points():
    # linear: k at 0, slope -c, floored at eps_min from (k - eps_min) / c on
    assert linear(0, k=1.0, c=0.01, eps_min=0.2) == 1.0
    assert linear(30, k=1.0, c=0.01, eps_min=0.2) == pytest.approx(0.7, abs=1e-15)
    assert linear(80, k=1.0, c=0.01, eps_min=0.2) == pytest.approx(0.2, abs=1e-15)
    assert linear(10_000, k=1.0, c=0.01, eps_min=0.2) == 0.2
    assert linear(2000) == pytest.approx(0.5) and linear(4000) == 0.0  # the documented defaults
    # exponential: k^i, 1 at 0, k at 1, halves at ln(0.5)/ln(k)
    assert exponential(0, k=0.9) == 1.0 and exponential(1, k=0.9) == 0.9
    assert exponential(7, k=0.9) == pytest.approx(0.9 ** 7, rel=1e-15)
    assert exponential(round(math.log(0.5) / math.log(0.9996))) == pytest.approx(0.5, abs=1e-3)
    # inverse sigmoid: k / (k + exp(i/k)); k/(k+1) at 0, 1/2 at k ln k, 0 far out, never overflowing
    assert inverse_sigmoid(0, k=10.0) == pytest.approx(10 / 11, rel=1e-15)
    assert inverse_sigmoid(50, k=50.0) == pytest.approx(50 / (50 + math.e), rel=1e-15)
    k = 20.0
    i = k * math.log(k)
    assert inverse_sigmoid(math.floor(i), k) > 0.5 > inverse_sigmoid(math.ceil(i), k)
    assert inverse_sigmoid(10**9, k=2.0) == 0.0
    for fn in (linear, exponential, inverse_sigmoid):
        values = [fn(s) for s in range(0, 20_000, 250)]
        assert all(a >= b for a, b in zip(values, values[1:])) and values[0] > values[-1]
    # ScheduledSampling clips to [0, 1]: a linear k above 1 is teacher forcing for a while
    ss = ScheduledSampling(make_schedule("linear", k=1.5, c=0.01))
    assert ss.eps(0) == 1.0 and ss.eps(50) == 1.0 and ss.eps(100) == pytest.approx(0.5) and ss.eps(1000) == 0.0


@pytest.mark.parametrize("call", [
    lambda: linear(0, c=-1.0), lambda: linear(0, eps_min=1.5), lambda: linear(-1), lambda: exponential(0, k=1.2),
    lambda: exponential(0, k=0.0), lambda: inverse_sigmoid(0, k=0.5), lambda: inverse_sigmoid(0, k=math.nan),
    lambda: make_schedule("cosine"), lambda: make_schedule("exponential", c=0.1),
    lambda: make_schedule("linear", k="1"),
])
def test_bad_schedules_are_config_errors(call):
    with pytest.raises(ConfigError):
        call()


# free running: what is fed, and where the gradient goes ------------------------------------------------

def test_free_running_raw_feeds_the_previous_softmax(monkeypatch):
    model = _model()
    x, y, state = _batch(model)
    calls = _record(monkeypatch, model)
    FreeRunning("raw").loss(model, x, y, state, step=0)
    assert len(calls) == T and torch.equal(calls[0][0], x[:, 0])
    for t in range(1, T):
        fed, prev = calls[t][0], calls[t - 1][1]
        assert fed.shape == (B, V) and torch.equal(fed, F.softmax(prev, dim=-1))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_free_running_argmax_feeds_the_one_hot_of_the_argmax(cell):
    model = _model(cell)
    x, y, state = _batch(model)
    r = FreeRunning("argmax").loss(model, x, y, state, step=0)
    fed = _replay(model, x, state, "argmax")  # an index at every step: the one-hot's embedding
    ref = _teacher_on(model, fed, y, state)
    assert abs(r.loss.item() - ref.item()) < 1e-12 and _close(_grads(model, r.loss), _grads(model, ref))
    assert r.logs["fed_true"] == (fed[:, 1:] == x[:, 1:]).double().mean().item()


def test_free_running_sample_draws_from_the_softmax_with_the_seeded_generator():
    model = _model()
    x, y, state = _batch(model, t=20)
    r = FreeRunning("sample").loss(model, x, y, state, step=0, generator=_gen(11))
    fed = _replay(model, x, state, "sample", _gen(11))  # the same draws, made by hand from the softmaxes
    assert abs(r.loss.item() - _teacher_on(model, fed, y, state).item()) < 1e-12
    again = FreeRunning("sample").loss(model, x, y, state, step=0, generator=_gen(11))
    assert torch.equal(again.loss, r.loss)
    other = FreeRunning("sample").loss(model, x, y, state, step=0, generator=_gen(12))
    assert not torch.equal(other.loss, r.loss)
    assert not torch.equal(_replay(model, x, state, "sample", _gen(12)), fed)


def test_free_running_without_gradient_is_teacher_forcing_on_what_it_fed(monkeypatch):
    """grad=False: the loss and gradient are those of a teacher-forced run on the fed inputs (taken as
    constants), for raw vectors and for one-hots alike; grad=True changes the gradient, not the loss."""
    for mode in ("raw", "argmax", "sample"):
        model = _model("lstm")
        x, y, state = _batch(model)
        calls = _record(monkeypatch, model)
        off = FreeRunning(mode, grad=False).loss(model, x, y, state, step=0, generator=_gen(2))
        if mode == "raw":  # stepped: the recorded inputs
            fed = [c[0] for c in calls]
            assert not any(f.requires_grad for f in fed)
        else:  # two passes: no graph through a step, the inputs a hand loop feeds
            assert not calls
            fed = list(_replay(model, x, state, mode, _gen(2)).unbind(1))
        soft = torch.stack([F.one_hot(f, V).to(D) if f.dim() == 1 else f for f in fed], dim=1)  # (B, T, V)
        logits, _ = model(soft, state)  # the fused path on the same inputs
        ref = sequence_loss(logits, y)
        assert abs(off.loss.item() - ref.item()) < 1e-10
        off_grads = _grads(model, off.loss)
        assert _close(off_grads, _grads(model, ref))
        calls.clear()
        on = FreeRunning(mode, grad=True).loss(model, x, y, state, step=0, generator=_gen(2))
        assert all(f.requires_grad for f in (c[0] for c in calls[1:]))
        if mode != "raw":  # straight-through: the forward value is the exact one-hot
            assert all(torch.equal(c[0], F.one_hot(f, V).to(D)) for c, f in zip(calls[1:], fed[1:]))
        assert abs(on.loss.item() - off.loss.item()) < 1e-12
        assert not _close(_grads(model, on.loss), off_grads, tol=1e-6)
        monkeypatch.undo()


def test_free_running_defaults_and_carry():
    assert FreeRunning("raw").grad and not FreeRunning("sample").grad and not FreeRunning("argmax").grad
    model = _model()
    x, y, state = _batch(model)
    fed = FreeRunning("argmax").loss(model, x, y, state, step=0)
    tf = FreeRunning("argmax", carry="teacher").loss(model, x, y, state, step=0)
    _, ref = model(x, state)
    assert all(torch.equal(a, b) for la, lb in zip(tf.state, ref) for a, b in zip(la, lb))
    assert not all(torch.equal(a, b) for la, lb in zip(fed.state, ref) for a, b in zip(la, lb))
    assert torch.equal(fed.loss, tf.loss)


# professor forcing ------------------------------------------------------------------------------------

def test_the_discriminator_learns_to_tell_smooth_sequences_from_shuffled_ones():
    torch.manual_seed(0)
    steps = 24

    def pair(n):
        t = torch.arange(steps, dtype=D)[None, :, None]  # (1, T, 1)
        w = torch.rand(n, 1, 4, dtype=D) * 0.3 + 0.2
        phase = torch.rand(n, 1, 4, dtype=D) * 6.3
        real = torch.sin(w * t + phase)  # (n, T, 4): slow, smooth
        fake = real[:, torch.randperm(steps)]  # the same values, in a random order
        return real, fake

    d = Discriminator(4, hidden_size=12, mlp_size=12).to(D)
    pf = ProfessorForcing(d, lr=1e-2, acc_decay=0.8)
    real, fake = pair(32)
    with torch.no_grad():
        before = ((d(torch.cat([real, fake])) > 0) == torch.cat([torch.ones(32), torch.zeros(32)]).bool())
    for _ in range(50):
        pf.discriminator_step(*pair(32))
    real, fake = pair(64)  # held out
    with torch.no_grad():
        acc = ((d(real) > 0).double().mean() + (d(fake) <= 0).double().mean()).item() / 2
    assert before.double().mean().item() < 0.8 < 0.95 < acc
    assert pf.accuracy > 0.9 and pf.updates == 50


def test_professor_forcing_learns_to_tell_the_two_runs_apart_and_its_gate_follows():
    """On a periodic text the untrained model's free run (its own draws) and the teacher-forced run
    differ; D's running accuracy rises from chance through the band and beyond, and the adversarial
    term is on exactly while the accuracy going into a batch lies in the band."""
    model = _model("gru")
    pf = ProfessorForcing.for_model(model, hidden_size=12, mlp_size=12, lr=1e-2, acc_decay=0.8, band=(0.75, 0.9))
    x = (torch.arange(13)[None, :] + torch.arange(B)[:, None]) % 7 // 2 * 2  # (B, 13): 0 0 2 2 4 4 6 0 ...
    before, on, adv = [], [], []
    for i in range(40):
        before.append(pf.accuracy)
        r = pf.loss(model, x[:, :-1], x[:, 1:], model.initial_state(B), step=i, generator=_gen(i))
        on.append(r.logs["adv_on"])
        adv.append(r.logs["adv"])
    assert on == [float(0.75 <= a <= 0.9) for a in before]
    assert on[0] == 0.0 and 1.0 in on and on[-1] == 0.0  # off at chance, on in the band, off above it
    assert pf.accuracy > 0.9 and adv[-1] > 2 * adv[0]  # D is sure: -log D(free) grew


def _discriminator_grads(pf: ProfessorForcing) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in pf.discriminator.parameters()]


@pytest.mark.parametrize("accuracy, on", [(0.5, False), (0.85, True), (0.999, False)])
def test_professor_forcing_gate_switches_the_adversarial_term(accuracy, on):
    model = _model("gru")
    x, y, state = _batch(model)
    pf = ProfessorForcing.for_model(model, hidden_size=6, mlp_size=6, band=(0.75, 0.99))
    pf.accuracy = accuracy
    w0 = [p.detach().clone() for p in pf.discriminator.parameters()]
    r = pf.loss(model, x, y, state, step=0, generator=_gen())
    assert r.logs["adv_on"] == float(on)
    assert not all(torch.equal(a, b) for a, b in zip(w0, pf.discriminator.parameters()))  # D always trains
    assert pf.accuracy == pytest.approx(0.9 * accuracy + 0.1 * r.logs["d_batch_acc"])
    tf = TeacherForcing().loss(model, x, y, state, step=0)
    assert r.nll == tf.loss.item()
    assert all(torch.equal(a, b) for la, lb in zip(r.state, tf.state) for a, b in zip(la, lb))
    d_grads = _discriminator_grads(pf)
    g = _grads(model, r.loss)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(d_grads, _discriminator_grads(pf)))
    if on:
        assert r.loss.item() == pytest.approx(r.nll + r.logs["adv"], rel=1e-12)
        assert not _close(g, _grads(model, tf.loss), tol=1e-8)
    else:
        assert torch.equal(r.loss, tf.loss)
        assert all(torch.equal(a, b) for a, b in zip(g, _grads(model, tf.loss)))


def test_professor_forcing_state_round_trip_resumes_exactly():
    model = _model("lstm")
    pf = ProfessorForcing.for_model(model, hidden_size=6, mlp_size=6, lr=1e-2)
    for i in range(3):
        x, y, state = _batch(model, seed=10 + i)
        pf.loss(model, x, y, state, step=i, generator=_gen(i))
    saved = pf.state_dict()
    saved = {"tensors": {k: v.clone() for k, v in saved["tensors"].items()},
             "meta": json.loads(json.dumps(saved["meta"]))}  # as a checkpoint stores it
    torch.manual_seed(99)
    other = ProfessorForcing.for_model(model, hidden_size=6, mlp_size=6, lr=1e-2)
    assert not all(torch.equal(a, b) for a, b in zip(pf.discriminator.parameters(), other.discriminator.parameters()))
    other.load_state_dict(saved)
    assert all(torch.equal(a, b) for a, b in zip(pf.discriminator.parameters(), other.discriminator.parameters()))
    assert other.accuracy == pf.accuracy and other.updates == pf.updates == 3
    # both continue identically: same loss, logs, and discriminator afterwards
    x, y, state = _batch(model, seed=20)
    model2 = copy.deepcopy(model)
    a = pf.loss(model, x, y, state, step=3, generator=_gen(3))
    b = other.loss(model2, x, y, state, step=3, generator=_gen(3))
    assert torch.equal(a.loss, b.loss) and a.logs == b.logs
    assert all(torch.equal(p, q) for p, q in zip(pf.discriminator.parameters(), other.discriminator.parameters()))
    # reset: back to the weights it was built with, chance accuracy, a fresh optimiser
    other.reset()
    assert other.accuracy == 0.5 and other.updates == 0 and not other.optimizer.state
    with pytest.raises(CheckpointError):
        other.load_state_dict(TeacherForcing().state_dict())
    with pytest.raises(CheckpointError):
        other.load_state_dict({"tensors": {}, "meta": saved["meta"]})


def test_a_professor_discriminator_of_the_wrong_size_says_so():
    model = _model()
    x, y, state = _batch(model)
    pf = ProfessorForcing(Discriminator(8, 4, 4).to(D), use_outputs=True)  # H = 8, but H + V = 15 needed
    with pytest.raises(ConfigError, match="15"):
        pf.loss(model, x, y, state, step=0)
    hidden_only = ProfessorForcing.for_model(model, use_outputs=False)  # the hidden states alone: F = H
    assert hidden_only.discriminator.feature_size == 8
    assert math.isfinite(hidden_only.loss(model, x, y, state, step=0).loss.item())


# the contract every strategy keeps ----------------------------------------------------------------------

@pytest.mark.parametrize("name", FEEDINGS)
def test_every_strategy_keeps_the_contract(name):
    model = _model("lstm")
    x, y, state = _batch(model)
    feeding = make_feeding(name, model=model)
    assert feeding.name == name
    r = feeding.loss(model, x, y, state, step=500, generator=_gen())
    assert r.loss.dim() == 0 and math.isfinite(r.loss.item()) and math.isfinite(r.nll)
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in r.logs.items())
    assert [[t.shape for t in layer] for layer in r.state] == [[t.shape for t in layer] for layer in state]
    grads = _grads(model, r.loss)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # state: tensors and JSON, restored into a fresh instance of the same strategy
    sd = feeding.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd["tensors"].values())
    meta = json.loads(json.dumps(sd["meta"]))
    fresh = make_feeding(name, model=model)
    fresh.load_state_dict({"tensors": sd["tensors"], "meta": meta})
    assert json.dumps(fresh.state_dict()["meta"], sort_keys=True) == json.dumps(meta, sort_keys=True)
    # with one step there is nothing to decide: every strategy reads the true x[:, 0]
    x1, y1 = x[:, :1], y[:, :1]
    one = make_feeding(name, model=model).loss(model, x1, y1, state, step=500, generator=_gen())
    assert abs(one.nll - TeacherForcing().loss(model, x1, y1, state, step=0).nll) < 1e-12


@pytest.mark.parametrize("name, options", [
    ("teacher-forcing", {}), ("teacher", {"grad": True}), ("free-raw", {"grad": "yes"}),
    ("free-sample", {"carry": "true"}), ("free-argmax", {"mode": "raw"}), ("scheduled", {"schedule": "cosine"}),
    ("scheduled", {"per": "batch"}), ("scheduled", {"model_token": "raw"}), ("scheduled", {"k": 0.5}),
    ("scheduled", {"schedule": "exponential", "eps_min": 0.1}), ("professor", {"band": (0.9, 0.8)}),
    ("professor", {"band": 0.8}), ("professor", {"adv_weight": -1.0}), ("professor", {"acc_decay": 1.0}),
    ("professor", {"hidden_size": 0}), ("professor", {"use_outputs": "no"}), ("professor", {"d_lr": 0.1}),
])
def test_bad_options_are_config_errors(name, options):
    with pytest.raises(ConfigError):
        make_feeding(name, model=_model(), **options)


def test_professor_needs_the_model_and_batches_must_be_ids():
    with pytest.raises(ConfigError, match="needs the model"):
        make_feeding("professor")
    model = _model()
    x, y, state = _batch(model)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        TeacherForcing().loss(model, x, y[:, :-1], state, step=0)
    with pytest.raises(ValueError, match="ids"):
        FreeRunning("raw").loss(model, x.double(), y, state, step=0)


def test_schedule_k_unset_is_the_schedules_default_and_zero_is_zero():
    from rnnlab.config import FeedingConfig

    unset = FeedingConfig(feeding="scheduled", schedule="linear")
    assert "k" not in unset.options() and make_feeding("scheduled", **unset.options()).eps(0) == 1.0
    zero = FeedingConfig(feeding="scheduled", schedule="linear", schedule_k=0.0, schedule_min=0.3)
    s = make_feeding("scheduled", **zero.options())
    assert [s.eps(i) for i in (0, 1, 10_000)] == [0.3, 0.3, 0.3]  # a constant mix from the start
    with pytest.raises(ConfigError, match=r"linear schedule: k \(eps at step 0\) must be >= 0, got -0.5"):
        make_schedule("linear", k=-0.5)


@pytest.mark.parametrize("schedule, k, says", [
    ("linear", "-1", "linear schedule: k (eps at step 0) must be >= 0, got -1.0"),
    ("exponential", "0", "exponential schedule: k must lie in (0, 1], got 0.0"),
    ("inverse-sigmoid", "0.5", "inverse-sigmoid schedule: k must be >= 1, got 0.5")])
def test_a_bad_schedule_k_is_refused_before_the_run_folder_exists(tmp_path, capsys, schedule, k, says):
    from rnnlab.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--mmap", "yes", "--feeding", "scheduled", "--schedule", schedule,
                 "--schedule-k", k, "--max-steps", "1", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"rnnlab: error: {says}"
    assert not out.exists()  # nothing written, not even the token file


# the probability of the true token, for a run's config -----------------------------------------------

@pytest.mark.parametrize("cfg", [
    FeedingConfig(feeding="scheduled"),
    FeedingConfig(feeding="scheduled", schedule="linear", schedule_k=1.2, schedule_c=1e-3, schedule_min=0.1),
    FeedingConfig(feeding="scheduled", schedule="exponential", schedule_k=0.99),
])
def test_teacher_probability_is_what_the_run_feeds_at_each_step(cfg):
    steps = [0, 1, 50, 200, 1711, 10_000]
    got = teacher_probability(cfg.feeding, steps, **cfg.options())
    strategy = make_feeding(cfg.feeding, **cfg.options())  # the object the training loop calls
    assert got == [strategy.eps(i) for i in steps]
    name = cfg.schedule
    by_hand = {"inverse-sigmoid": lambda i: 300 / (300 + math.exp(i / 300)),
               "linear": lambda i: min(1.0, max(0.1, 1.2 - 1e-3 * i)),
               "exponential": lambda i: 0.99 ** i}[name]
    assert got == pytest.approx([by_hand(i) for i in steps], rel=1e-12, abs=1e-300)


def test_teacher_probability_of_the_other_strategies():
    assert teacher_probability("teacher", [0, 5]) == [1.0, 1.0]
    assert teacher_probability("free-sample", [0, 5], grad=False) == [0.0, 0.0]
    assert teacher_probability("free-raw", [3]) == [0.0]
    assert teacher_probability("professor", [0, 5]) is None
    with pytest.raises(ConfigError, match="feeding must be one of"):
        teacher_probability("mixed", [0])
    with pytest.raises(ConfigError, match="step must be an integer >= 0"):
        teacher_probability("teacher", [-1])

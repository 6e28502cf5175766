"""The lab's core (rnnlab.lab): the Lab object, its cache of models, the one-at-a-time job runner (children with
one thread, stop, time cap), the runs folder's size cap, the token, the page shell; and the section ``train``'s
API, checked against the library (rnnlab.sampling.generate) and the command line (rnnlab train --resume,
rnnlab sample). Every bad input gets a 4xx."""

from __future__ import annotations

import io
import json
import shutil
import stat
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from conftest import lab_app, lab_screenshot
from fastapi.testclient import TestClient

from rnnlab.checkpoint import load_checkpoint
from rnnlab.config import SampleConfig
from rnnlab.lab import SECTIONS, Lab, ModelNotReady, lab_html
from rnnlab.lab import models as lab_models
from rnnlab.lab.jobs import Job, JobRunner
from rnnlab.sampling import generate

TOKEN = "lab-token-0123456789abcdef"
TINY = {"hidden_size": 8, "batch_size": 4, "seq_len": 16}  # a page run of a few steps a second


def client(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def wait_until(cond, timeout: float = 90.0, every: float = 0.1):
    """Poll ``cond`` until it returns something true (a bound on a hang, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"gave up after {timeout} s")


# --- the Lab object and its models --------------------------------------------------------------

def test_every_lab_model_is_listed_ready_and_loads(lab_cache):
    with client(lab_app(lab_cache)) as c:
        listed = c.get("/api/lab/models").json()
        lab = c.app.state.lab
        assert [m["name"] for m in listed] == list(lab_models.RECIPES)
        assert all(m["ready"] and m["source"] == "lab" and m["progress"]["state"] == "done" for m in listed)
        by_name = {m["name"]: m for m in listed}
        assert by_name["professor"]["cell"] == "lstm" and by_name["professor"]["feeding"] == "professor"
        assert by_name["digits"]["kind"] == "classifier"
        for name in ("elman", "lstm", "gru", "free-sample", "scheduled", "professor"):
            entry = lab.language_model(name)
            ckpt = load_checkpoint(lab.run_dir(name) / "best.safetensors")
            assert entry.config.model.cell == ckpt.config.model.cell == lab_models.RECIPES[name].cell
            assert entry.config.feeding.feeding == lab_models.RECIPES[name].feeding
            assert lab.language_model(name) is entry  # loaded once
        assert lab.classifier("digits").labels == [str(i) for i in range(10)]
        assert c.get("/api/lab/models/gru").json()["name"] == "gru"


def test_the_wrong_kind_or_an_unknown_name_is_a_4xx(lab_cache):
    with client(lab_app(lab_cache)) as c:
        r = c.post("/api/lab/train/sample", json={"name": "digits"})
        assert r.status_code == 422 and "not a language model" in r.json()["error"]
        r = c.get("/api/lab/models/nope")
        assert r.status_code == 404 and "elman" in r.json()["error"]
        r = c.post("/api/lab/models/nope/prepare", json={})
        assert r.status_code == 404
        with pytest.raises(Exception, match="not a classifier"):
            c.app.state.lab.classifier("lstm")


def test_a_model_not_trained_yet_is_a_503_with_its_progress(tmp_path):
    with client(lab_app(tmp_path / "empty")) as c:
        listed = c.get("/api/lab/models").json()
        assert not any(m["ready"] for m in listed if m["source"] == "lab")
        r = c.post("/api/lab/train/sample", json={"name": "lstm"})
        assert r.status_code == 503
        body = r.json()
        assert body["model"] == "lstm" and body["progress"]["state"] in ("absent", "queued", "training")
        assert "not ready" in body["error"] and r.headers["retry-after"]
        with pytest.raises(ModelNotReady):
            c.app.state.lab.run_dir("gru")


def test_a_corrupt_cached_model_is_trained_again_through_the_job_runner(lab_cache, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(lab_cache, cache)
    for f in ("best.safetensors", "last.safetensors"):
        (cache / "gru" / f).write_bytes(b"not a checkpoint at all")
    tiny = lab_models.Recipe.config
    monkeypatch.setattr(lab_models.Recipe, "config", lambda self, out, tiny_=False: tiny(self, out, tiny=True))
    with client(lab_app(cache, train_lab_models=True)) as c:
        r = c.post("/api/lab/train/sample", json={"name": "gru"})
        assert r.status_code == 503 and r.json()["model"] == "gru"  # not a 500: dropped and queued
        assert not (cache / "gru").exists() or not lab_models.is_ready(cache, "gru")
        job = c.app.state.lab.jobs.wait("gru", timeout=120)
        assert job is not None and job.state == "done", job and job.error
        assert lab_models.is_ready(cache, "gru") and not list(cache.glob(".training-*"))
        r = c.post("/api/lab/train/sample", json={"name": "gru", "length": 5})
        assert r.status_code == 200 and len(r.json()["text"]) == 5


def test_a_killed_servers_half_trained_folder_is_never_ready_and_is_cleaned(lab_cache, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    half = cache / ".training-lstm-999999999"  # a pid that is not running
    shutil.copytree(lab_cache / "lstm", half)
    (half / lab_models.MARKER).unlink()
    Lab(cache)
    assert not half.exists() and not lab_models.is_ready(cache, "lstm")


def test_a_model_cached_by_an_older_recipe_is_not_ready(lab_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(lab_cache / "lstm", cache / "lstm")
    assert lab_models.is_ready(cache, "lstm")
    marker = cache / "lstm" / lab_models.MARKER
    marker.write_text(json.dumps({"name": "lstm", "version": lab_models.RECIPE_VERSION - 1}), encoding="utf-8")
    assert not lab_models.is_ready(cache, "lstm")


def test_texts_come_from_the_data_dir_by_name_only(lab_cache, tmp_path):
    data = tmp_path / "texts"
    data.mkdir()
    (data / "poem.txt").write_text("roses are red\n", encoding="utf-8")
    (data / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (data / "notes.md").write_text("not a txt", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("outside", encoding="utf-8")
    with client(lab_app(lab_cache, data_dir=data)) as c:
        assert c.get("/api/lab/texts").json()["texts"] == ["builtin", "latin1.txt", "poem.txt"]
        lab = c.app.state.lab
        assert lab.text("poem.txt") == "roses are red\n"
        assert lab.text("builtin").startswith(lab_models_text_start())
        for bad in ("../secret.txt", "notes.md", "/etc/passwd", "secret.txt"):
            r = c.post("/api/lab/train/start", json={"text": bad, **TINY})
            assert r.status_code == 404 and "texts are" in r.json()["error"]
        with pytest.raises(Exception, match="not UTF-8"):
            lab.text("latin1.txt")
    with pytest.raises(ValueError, match="data-dir"):
        Lab(tmp_path / "c", data_dir=tmp_path / "missing")


def lab_models_text_start() -> str:
    from rnnlab.data.corpus import stdlib_corpus

    return stdlib_corpus(100)[0]


def test_command_line_models_join_the_lab(lab_cache):
    given = lab_cache / "lstm"  # a run folder named like a lab model: listed under another name
    with client(lab_app(lab_cache, checkpoints=[str(given)])) as c:
        listed = {m["name"]: m for m in c.get("/api/lab/models").json()}
        assert listed["lstm-given"]["source"] == "command line" and listed["lstm"]["source"] == "lab"
        lab = c.app.state.lab
        assert lab.run_dir("lstm-given") == given
        assert lab.language_model("lstm-given").vocab.symbols == lab.language_model("lstm").vocab.symbols
        page = c.get("/")
        assert page.status_code == 200 and 'id="lab-link"' in page.text  # the single-model page, linking the lab


# --- the page shell -------------------------------------------------------------------------------

def test_the_lab_page_is_served_at_root_without_checkpoints_with_every_section_script(lab_cache):
    with client(lab_app(lab_cache)) as c:
        for path in ("/", "/lab"):
            r = c.get(path)
            assert r.status_code == 200 and "rnnlab lab" in r.text
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert '<script src="/lab/assets/lab.js" defer>' in r.text
            assert '<script src="/lab/assets/train.js" defer>' in r.text
        assert c.get("/api/lab/sections").json()["sections"][-1] == "train"
        js = c.get("/lab/assets/lab.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "Lab.register" in c.get("/lab/assets/train.js").text
        for bad in ("nope.js", "index.html", "..%2Fserve.py", "LAB.JS", "lab.js.map"):
            assert c.get(f"/lab/assets/{bad}").status_code == 404
    assert set(SECTIONS) >= {"train"}
    assert "alert(1)" not in lab_html("<script>alert(1)</script>")  # only a token's characters reach the page


def test_the_token_guards_the_lab_and_its_assets_carry_it(lab_cache):
    with client(lab_app(lab_cache, token=TOKEN)) as c:
        assert c.get("/api/lab/models").status_code == 401
        assert c.post("/api/lab/train/start", json=TINY).status_code == 401
        assert c.get("/lab/assets/lab.js").status_code == 401
        page = c.get(f"/lab?token={TOKEN}")
        assert page.status_code == 200 and f'/lab/assets/lab.js?token={TOKEN}"' in page.text
        assert c.get(f"/lab/assets/lab.js?token={TOKEN}").status_code == 200
        r = c.get("/api/lab/models", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()[0]["name"] == "elman"


# --- the job runner --------------------------------------------------------------------------------

@pytest.fixture
def stub_python(tmp_path) -> str:
    """An 'interpreter' that trains nothing: it says "ready" once it listens for SIGTERM, sleeps until it comes,
    then exits 0 (as a run that checkpointed)."""
    stub = tmp_path / "stub-python"
    stub.write_text("#!/bin/sh\ntrap 'exit 0' TERM\necho ready\nsleep 60 &\nwait\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    return str(stub)


def stub_job(tmp_path: Path, name: str, source: str = "page") -> Job:
    return Job(name, "language-model", {"train": {"out": str(tmp_path / "runs" / name), "time_budget": 10.0}}, source)


def started(job: Job) -> bool:
    """The stand-in child of ``job`` listens for SIGTERM (its log says so)."""
    return job.log.exists() and b"ready" in job.log.read_bytes()


def test_jobs_run_one_at_a_time_in_order_and_stop(tmp_path, stub_python):
    runner = JobRunner(python=stub_python)
    try:
        a = runner.submit(stub_job(tmp_path, "a", "lab"))
        wait_until(lambda: started(a))
        b = runner.submit(stub_job(tmp_path, "b", "lab"))
        c = runner.submit(stub_job(tmp_path, "c"), front=True)
        assert runner.submit(stub_job(tmp_path, "b", "lab")) is b  # the same name: the job already queued
        assert [j.name for j in runner.active()] == ["a", "c", "b"]
        assert (a.state, b.state, c.state) == ("training", "queued", "queued")
        assert runner.stop("b").state == "stopped" and b.proc is None  # a queued job leaves the queue
        runner.stop("a")
        wait_until(lambda: c.proc is not None)
        assert a.state == "stopped" and a.returncode == 0 and c.state == "training"
        assert [j.name for j in runner.active()] == ["c"] and runner.active(source="lab") == []
    finally:
        runner.close()
    assert wait_until(lambda: c.proc.poll() is not None) and c.state in ("failed", "stopped", "training")


# --- the section "train": a real child process --------------------------------------------------------

def test_a_page_run_trains_to_its_time_cap_and_is_an_ordinary_run(lab_cache, tmp_path):
    runs = tmp_path / "runs"
    with client(lab_app(lab_cache, runs_dir=runs)) as c:
        r = c.post("/api/lab/train/start", json={"cell": "gru", "time_budget": 2.0, **TINY})
        assert r.status_code == 200, r.text
        name = r.json()["name"]
        assert name == "gru-8-1"
        second = c.post("/api/lab/train/start", json={"cell": "lstm", "time_budget": 2.0, **TINY})
        assert second.status_code == 409 and "already training" in second.json()["error"]
        lab = c.app.state.lab
        job = lab.jobs.wait(name, timeout=120)
        assert job.state == "done", (job.error, job.log.read_text() if job.log.exists() else "")
        cfg = json.loads((runs / name / "config.json").read_text())
        assert cfg["train"]["max_steps"] == 0 and cfg["train"]["threads"] == 1  # only the time cap could stop it
        status = c.get(f"/api/lab/train/status?name={name}").json()
        assert status["job"]["state"] == "done" and status["job"]["fraction"] == 1.0 and status["checkpoint"]
        steps = [json.loads(x)["step"] for x in (runs / name / "metrics.jsonl").read_text().splitlines()
                 if json.loads(x)["split"] == "train"]
        assert [p[0] for p in status["curves"]["train"]] == steps and steps
        listed = {m["name"]: m for m in c.get("/api/lab/models").json()}
        assert listed[name]["source"] == "trained here" and listed[name]["ready"] and listed[name]["cell"] == "gru"
        # the page's sample is the library's, from the run's latest checkpoint, seed for seed
        answer = c.post("/api/lab/train/sample", json={"name": name, "prime": "def ", "length": 40,
                                                        "temperature": 0.7, "seed": 3}).json()
        ckpt = load_checkpoint(runs / name / "last.safetensors")
        model = ckpt.build_model().eval()
        want = generate(model, ckpt.vocab, SampleConfig(prime="def ", length=40, temperature=0.7, seed=3))[0]
        assert answer["text"] == want
    # and the command line reads it and resumes it
    from rnnlab.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["sample", str(runs / name / "last.safetensors"), "--prime", "def ", "--length", "40",
                     "--temperature", "0.7", "--seed", "3"]) == 0
    assert out.getvalue().rstrip("\n") == want
    done = ckpt.train_state["step"]
    with redirect_stdout(io.StringIO()):
        assert main(["train", "--resume", "--out", str(runs / name), "--max-steps", str(done + 3), "--time-budget", "0",
                     "--quiet"]) == 0
    assert load_checkpoint(runs / name / "last.safetensors").train_state["step"] == done + 3


def test_a_page_run_is_stopped_from_the_api(lab_cache, tmp_path, stub_python):
    with client(lab_app(lab_cache, runs_dir=tmp_path / "runs")) as c:
        lab = c.app.state.lab
        lab.jobs.python = stub_python  # the child sleeps until SIGTERM: the API's part, without training
        r = c.post("/api/lab/train/start", json={"cell": "elman", "time_budget": 600.0, "name": "stopme", **TINY})
        assert r.status_code == 200 and r.json()["job"]["source"] == "page"
        job = lab.jobs.get("stopme")
        wait_until(lambda: started(job))
        assert c.get("/api/lab/train/status").json()["name"] == "stopme"  # the page finds the run going
        assert c.get("/api/lab/jobs").json()["jobs"][0]["state"] == "training"
        assert c.post("/api/lab/train/start", json={"name": "another", **TINY}).status_code == 409
        r = c.post("/api/lab/train/stop", json={"name": "stopme"})
        assert r.status_code == 200
        assert lab.jobs.wait("stopme", timeout=30).state == "stopped"
        assert c.get("/api/lab/train/status").json()["name"] is None  # nothing running now
        assert c.get("/api/lab/train/status?name=stopme").json()["job"]["state"] == "stopped"


def test_opening_the_page_queues_every_missing_model_and_a_needed_one_goes_first(tmp_path, stub_python):
    with client(lab_app(tmp_path / "cache", train_lab_models=False)) as c:
        assert c.post("/api/lab/prepare", json={}).json()["queued"] == []  # this lab trains nothing itself
        assert c.app.state.lab.jobs.active() == []
    with client(lab_app(tmp_path / "cache", train_lab_models=True)) as c:
        lab = c.app.state.lab
        lab.jobs.python = stub_python  # the children sleep: only the order is looked at
        assert c.post("/api/lab/prepare", json={}).json()["queued"] == list(lab_models.RECIPES)
        wait_until(lambda: lab.jobs.get("elman").proc is not None)
        assert [j.name for j in lab.jobs.active()] == list(lab_models.RECIPES)
        r = c.post("/api/lab/models/gru/prepare", json={})
        assert r.json()["progress"]["state"] == "queued" and not r.json()["ready"]
        r = c.post("/api/lab/train/sample", json={"name": "digits"})  # a section asking for it: also next
        assert r.status_code == 503 and r.json()["progress"]["state"] == "queued"
        assert [j.name for j in lab.jobs.active()][:3] == ["elman", "digits", "gru"]
        assert len(lab.jobs.active()) == len(lab_models.RECIPES)  # each once
        footer = c.get("/api/lab/jobs").json()["jobs"]
        assert footer[0]["name"] == "elman" and footer[0]["state"] == "training"
    assert lab.jobs.get("elman").state in ("stopped", "failed", "training") and lab.jobs.get("gru").state == "stopped"


def test_a_stuck_child_is_killed(tmp_path, monkeypatch):
    from rnnlab.lab import jobs

    stub = tmp_path / "silent-python"
    stub.write_text("#!/bin/sh\nexec sleep 60\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(jobs, "STALL_S", 1.0)
    runner = JobRunner(python=str(stub))
    try:
        job = runner.submit(stub_job(tmp_path, "stuck"))
        assert runner.wait("stuck", timeout=30).state == "failed" and "no progress" in job.error
    finally:
        runner.close()


def test_page_runs_are_refused_over_the_size_cap_and_for_bad_parameters(lab_cache, tmp_path):
    runs = tmp_path / "runs"
    (runs / "old").mkdir(parents=True)
    (runs / "old" / "big.bin").write_bytes(b"\0" * 20_000)
    with client(lab_app(lab_cache, runs_dir=runs, runs_max_mb=0.01)) as c:
        r = c.post("/api/lab/train/start", json=TINY)
        assert r.status_code == 409 and "cap" in r.json()["error"] and "--runs-max-mb" in r.json()["error"]
        bad = [{"hidden_size": 100_000}, {"hidden_size": 0}, {"cell": "transformer"}, {"num_layers": 9},
               {"time_budget": 1e9}, {"time_budget": "60"}, {"name": "../escape"}, {"name": "lstm"},
               {"surprise": 1}, {"seed": -1}]
        for body in bad:
            r = c.post("/api/lab/train/start", json=body)
            assert 400 <= r.status_code < 500 and r.json()["error"], body
        assert c.post("/api/lab/train/stop", json={"name": "nothing"}).status_code == 404
        assert c.post("/api/lab/train/sample", json={"name": "../x"}).status_code == 404
        assert c.post("/api/lab/train/sample", json={"name": "lstm", "prime": "\u2603"}).status_code == 422
        assert c.get("/api/lab/train/status?name=nothing").status_code == 404
        assert c.post("/api/lab/train/start", content=b"{not json", headers={"content-type": "application/json"}
                      ).status_code == 422
    with pytest.raises(ValueError, match="cap"):
        Lab(tmp_path / "c", runs_max_mb=0)


def test_serve_takes_the_lab_options_and_no_checkpoint():
    from rnnlab.cli import build_parser

    ns = build_parser().parse_args(["serve", "--data-dir", "texts", "--runs-dir", "r", "--runs-max-mb", "50",
                                    "--lab-cache", "c"])
    assert ns.checkpoints == [] and (ns.data_dir, ns.runs_dir, ns.runs_max_mb, ns.lab_cache) == ("texts", "r", 50.0, "c")


# --- in the browser: the tabs by keyboard, a run started and stopped from the page --------------------

CHROMIUM = Path("/usr/bin/chromium")


def test_the_page_moves_through_the_tabs_by_keyboard_and_starts_and_stops_a_run(lab_cache, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/install-browser (Debian's chromium)")

    import httpx
    from conftest import LabServer

    runs = tmp_path / "runs"
    problems: list[str] = []
    with LabServer(lab_cache, "--runs-dir", str(runs), log=tmp_path / "server.log") as server, \
            sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(server.url + "/")
            page.wait_for_selector("#lab-tabs [role=tab]")
            tabs = page.locator("#lab-tabs [role=tab]")
            assert [tabs.nth(i).get_attribute("data-section") for i in range(tabs.count())] == list(SECTIONS)
            assert page.get_attribute("#tab-elman", "aria-selected") == "true" and page.is_visible("#panel-elman")

            # the keyboard: arrows move along the tabs (wrapping), Home and End jump; each shows its panel
            page.focus("#tab-elman")
            page.keyboard.press("ArrowLeft")
            assert page.get_attribute("#tab-train", "aria-selected") == "true" and page.is_visible("#panel-train")
            assert page.is_hidden("#panel-elman")
            page.keyboard.press("Home")
            for sid in SECTIONS[1:]:
                page.keyboard.press("ArrowRight")
                assert page.evaluate("document.activeElement.dataset.section") == sid
                assert page.is_visible(f"#panel-{sid}")
            page.keyboard.press("Home")
            page.keyboard.press("End")
            assert page.get_attribute("#tab-train", "aria-selected") == "true"
            assert page.url.endswith("#train")

            # train: a tiny run, started from the page, watched, then stopped
            page.wait_for_selector("#train-start")
            page.select_option("#train-cell", "gru")
            page.fill("#train-hidden", "8")
            page.fill("#train-budget", "600")
            page.fill("#train-name", "from-the-page")
            page.click("#train-start")
            page.wait_for_selector("#train-state[data-state=training]", timeout=30_000)
            page.wait_for_selector("#train-curve svg:not([data-train-points='0'])", timeout=60_000)
            page.wait_for_selector("#train-sample[data-step]", timeout=60_000)  # sampled from the latest checkpoint
            assert page.is_enabled("#train-stop") and page.is_disabled("#train-start")
            page.click("#train-stop")
            page.wait_for_selector("#train-state[data-state=stopped]", timeout=60_000)
            assert page.is_enabled("#train-start")
            status = httpx.get(f"{server.url}/api/lab/train/status?name=from-the-page").json()
            assert status["job"]["state"] == "stopped" and status["checkpoint"]
            page.wait_for_selector(f"#train-curve svg[data-train-points='{len(status['curves']['train'])}']")
            # a sample now, from the final checkpoint: the API's text for the same settings
            page.fill("#train-temperature", "0.5")
            page.click("#train-sample-again")
            page.wait_for_selector("#train-sample-info:has-text('temperature 0.5')")
            want = httpx.post(f"{server.url}/api/lab/train/sample",
                              json={"name": "from-the-page", "length": 200, "temperature": 0.5, "seed": 0}).json()
            assert page.inner_text("#train-sample") == want["text"]
            assert "now one of the lab's models" in page.inner_text("#train-after")
            models = httpx.get(f"{server.url}/api/lab/models").json()
            assert {"name": "from-the-page", "source": "trained here"}.items() <= next(
                m for m in models if m["name"] == "from-the-page").items()
            assert (runs / "from-the-page" / "last.safetensors").is_file()
            lab_screenshot(page, "train")
            # the run is a model of the sampling tab, opened before it existed: chosen, it draws its distribution
            page.click("#tab-sampling")
            sampling = page.locator("#panel-sampling")
            sampling.locator("select[aria-label=Model] option[value=from-the-page]").wait_for(state="attached")
            sampling.get_by_label("Model").select_option("from-the-page")
            prime = sampling.get_by_label("Prime").input_value()
            want = httpx.post(f"{server.url}/api/lab/sampling/distribution",
                              json={"model": "from-the-page", "prime": prime, "bars": 40}).json()
            page.wait_for_function(
                "(ids) => { const b = Array.from(document.querySelectorAll('#panel-sampling .smp-bar'));"
                " return b.length === ids.length && b.every((x, i) => x.dataset.id === String(ids[i])); }",
                arg=[t["id"] for t in want["tokens"]], timeout=30_000)
        finally:
            browser.close()
    assert not [p for p in problems if "lab.js" in p or "train.js" in p], problems


def test_the_page_shows_a_missing_models_training_progress(lab_cache, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/install-browser (Debian's chromium)")
    import httpx
    from conftest import LabServer

    cache = tmp_path / "cache"
    shutil.copytree(lab_cache, cache, ignore=shutil.ignore_patterns("gru"))
    with LabServer(cache, "--runs-dir", str(tmp_path / "runs"), log=tmp_path / "server.log") as server, \
            sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page()
            page.goto(server.url + "/lab#ngrams")
            page.wait_for_selector("#lab-tabs [role=tab]")
            # (not awaited: the promise resolves only once gru is trained)
            page.evaluate("() => { Lab.whenReady(document.getElementById('panel-ngrams'), 'gru'); }")
            box = page.wait_for_selector(".lab-progress[data-model=gru]")
            assert "training its model “gru”" in box.inner_text()
            assert box.query_selector("progress[aria-label='training gru']") is not None
            page.wait_for_selector("#lab-jobs:has-text('gru')", timeout=20_000)  # the footer: what trains now
            jobs = httpx.get(f"{server.url}/api/lab/jobs").json()["jobs"]
            assert [j["name"] for j in jobs] == ["gru"] and jobs[0]["source"] == "lab"  # the only model missing
        finally:
            browser.close()
    assert not list(cache.glob("gru")) and not lab_models.is_ready(cache, "gru")  # stopped with the server: no half model

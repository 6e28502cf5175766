"""The lab's first renders: each tab of the lab page, timed in Chromium against the real server and the real models.

The lab's own models (``rnnlab.lab.models.RECIPES``, at their real size: 1 x 128 language models trained 90
CPU-seconds each, the digits classifier 60) are taken from ``--cache`` (the lab's own cache folder by default),
and trained into it first where they are missing (minutes each: ``rnnlab.lab.models.train_now``). Then the real
server (``rnnlab.serve.serve``, uvicorn, as ``rnnlab serve`` runs it with no checkpoint) is started in a
subprocess on a free loopback port, and Chromium (Playwright) opens the page.

A tab's drawing is *complete* when the shell marks its panel ``data-drawn="1"``: every section's ``mount``
resolves once each figure it draws on opening is drawn (the Elman trace, the n-gram counts, table and sample,
the distribution, continuations and beam tree, the loss curves, schedules, exposure curves and samples of the
four runs, the gradient curves and the three connectivity texts, the classifier's probabilities and confusion
matrix, the train tab's options and curve). The shell stamps ``data-drawn-ms`` (from showing the tab) and
``data-drawn-at`` (from the page's start). A section whose drawing shows an error (``.lab-error``) is counted
as failed.

Four measures per tab, wall clock:

* **first** -- a fresh server for each tab (its background warm-up finished: the page is opened once the server
  says so, and the warm-up's own seconds are recorded), a fresh browser: from the page's navigation to
  ``/lab#<tab>`` until the tab is drawn. This is the goal's number: under ``--goal`` seconds.
* **cold** -- one server for the rest; a fresh browser context (nothing cached) opens ``/lab#<tab>``: from the
  navigation until drawn.
* **warm** -- ``--repeats`` times in one browser context: the page loaded on another tab, then the tab clicked;
  from the click until drawn (median, min and max).
* **training** -- while a run started from the train tab (Start clicked; a child process with one thread) is
  training, each other tab is clicked as in *warm*: that training does not stall the other sections.

The machine's load average is recorded at the start, before each phase and at the end (others may share the
cores; a loaded machine makes every number larger).

    .venv/bin/python benchmarks/bench_lab.py                                 # the lab's own cache
    .venv/bin/python benchmarks/bench_lab.py --cache /tmp/lab-cache --repeats 5
    .venv/bin/python benchmarks/bench_lab.py --tabs elman sampling --name lab_smoke

Writes ``benchmarks/results/<name>.json`` and ``<name>.md`` (``--name`` defaults to ``lab``). Exits 1 when a tab
failed to draw (an error shown, or no drawing within ``--timeout`` seconds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import write_results

from rnnlab.lab import SECTIONS
from rnnlab.lab import models as lab_models

RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM = "/usr/bin/chromium"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None,
                    help="the lab's cache folder: its models are used, the missing ones trained into it first "
                         "(default: the lab's own, $RNNLAB_LAB_CACHE or ~/.cache/rnnlab/lab)")
    ap.add_argument("--tabs", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="the tabs measured")
    ap.add_argument("--repeats", type=int, default=3, help="warm renders of each tab (default 3)")
    ap.add_argument("--goal", type=float, default=2.0, help="a first render's goal in seconds (default 2)")
    ap.add_argument("--train-budget", type=float, default=180.0,
                    help="the time cap of the run trained from the page during the last phase (it is stopped when "
                         "the phase ends; default 180 s)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a tab may take before it counts as failed")
    ap.add_argument("--name", default="lab", help="results file name (default lab)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--chromium", default=CHROMIUM, help=f"the Chromium binary (default {CHROMIUM})")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    return args


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def build_models(cache: Path) -> dict[str, float]:
    """Train every lab model missing from ``cache`` (its real recipe); seconds each."""
    took = {}
    for name in lab_models.RECIPES:
        if lab_models.is_ready(cache, name):
            continue
        print(f"bench_lab: training the lab's model {name!r} into {cache} (its real size; minutes)", flush=True)
        t = time.perf_counter()
        lab_models.train_now(cache, name)
        took[name] = round(time.perf_counter() - t, 1)
    return took


class Server:
    """``rnnlab.serve.serve([], ...)`` (what ``rnnlab serve`` runs with no checkpoint) in a subprocess."""

    def __init__(self, cache: Path, runs: Path, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        code = (f"from rnnlab.serve import serve; serve([], host='127.0.0.1', port={self.port}, log_level='warning', "
                f"lab_cache={str(cache)!r}, runs_dir={str(runs)!r})")
        self.log = log
        self._out = open(log, "ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=self._out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait(self, timeout: float = 300.0) -> dict[str, Any]:
        """Until it answers and its warm-up is done: ``{"answers_s", "warm_up_s", "warm_up"}``."""
        deadline = time.monotonic() + timeout
        answered = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                r = httpx.get(f"{self.url}/api/lab/warm-up", timeout=2)
                if r.status_code == 200:
                    answered = answered or time.perf_counter()
                    w = r.json()
                    if w["state"] == "done":
                        return {"answers_s": round(answered - self.started, 2),
                                "warm_up_s": round(time.perf_counter() - answered, 2), "warm_up": w}
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.close()
        raise SystemExit(f"bench_lab: the server did not start or warm up: {self.log.read_text()[-2000:]}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._out.close()


def drawn(page: Any, tab: str, timeout: float) -> dict[str, Any]:
    """Wait for the tab's panel to be drawn: ``{"ok", "ms" (from showing the tab), "at" (from the page's start),
    "error"}``."""
    sel = f"#panel-{tab}"
    try:
        page.wait_for_selector(f"{sel}[data-drawn]", state="attached", timeout=timeout * 1000)
    except Exception as e:  # noqa: BLE001 - playwright's TimeoutError: counted as a failure
        return {"ok": False, "ms": None, "at": None, "error": f"not drawn within {timeout:g} s ({type(e).__name__})"}
    d = page.eval_on_selector(sel, "el => ({state: el.dataset.drawn, ms: Number(el.dataset.drawnMs), "
                                   "at: Number(el.dataset.drawnAt), errors: Array.from(el.querySelectorAll("
                                   "'.lab-error')).map((e) => e.textContent).filter((t) => t.trim())})")
    error = None if d["state"] == "1" and not d["errors"] else ("; ".join(d["errors"]) or "mount failed")[:300]
    return {"ok": error is None, "ms": d["ms"], "at": d["at"], "error": error}


def first_renders(args: argparse.Namespace, p: Any, cache: Path, work: Path) -> tuple[dict[str, Any], list[dict]]:
    """A fresh server and browser per tab: navigation to drawn."""
    out, servers = {}, []
    for tab in args.tabs:
        server = Server(cache, work / "runs", work / "server.log")
        try:
            info = server.wait()
            info["load"] = load()
            servers.append({"tab": tab, **info})
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{server.url}/lab#{tab}")
                r = drawn(page, tab, args.timeout)
                out[tab] = {**r, "s": None if r["at"] is None else round(r["at"] / 1000, 3)}
            finally:
                browser.close()
        finally:
            server.close()
        print(f"bench_lab: first {tab}: {out[tab]['s']} s (server answered after {info['answers_s']} s, warm-up "
              f"{info['warm_up'].get('seconds')} s){'' if out[tab]['ok'] else ' ERROR ' + str(out[tab]['error'])}",
              flush=True)
    return out, servers


def click_render(page: Any, tab: str, timeout: float) -> dict[str, Any]:
    page.locator(f"#tab-{tab}").click()
    r = drawn(page, tab, timeout)
    return {**r, "s": None if r["ms"] is None else round(r["ms"] / 1000, 3)}


def later_renders(args: argparse.Namespace, p: Any, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cold (a fresh browser context, navigation to drawn) and warm (clicks in one context) renders."""
    browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
    cold, warm = {}, {tab: [] for tab in args.tabs}
    try:
        for tab in args.tabs:
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            page.goto(f"{url}/lab#{tab}")
            r = drawn(page, tab, args.timeout)
            cold[tab] = {**r, "s": None if r["at"] is None else round(r["at"] / 1000, 3)}
            ctx.close()
            print(f"bench_lab: cold {tab}: {cold[tab]['s']} s", flush=True)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        for k in range(args.repeats):
            for tab in args.tabs:
                page = ctx.new_page()
                start = next(t for t in SECTIONS if t != tab)  # opened on another tab, then this one clicked
                page.goto(f"{url}/lab#{start}")
                drawn(page, start, args.timeout)
                warm[tab].append(click_render(page, tab, args.timeout))
                page.close()
            print(f"bench_lab: warm round {k + 1}: " + ", ".join(f"{t} {warm[t][-1]['s']} s" for t in args.tabs),
                  flush=True)
        ctx.close()
    finally:
        browser.close()
    return cold, warm


def while_training(args: argparse.Namespace, p: Any, url: str) -> dict[str, Any]:
    """Start a run from the train tab, wait until it trains, then click every other tab in a fresh page."""
    browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
    out: dict[str, Any] = {"tabs": {}}
    try:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        trainer = ctx.new_page()
        trainer.goto(f"{url}/lab#train")
        drawn(trainer, "train", args.timeout)
        trainer.locator("#train-budget").fill(f"{args.train_budget:g}")
        trainer.locator("#train-name").fill("bench-run")
        trainer.locator("#train-start").click()
        deadline = time.monotonic() + 180
        job = None
        while time.monotonic() < deadline:  # training, with a step logged: the child is computing, not importing
            jobs = httpx.get(f"{url}/api/lab/jobs", timeout=10).json()["jobs"]
            job = next((j for j in jobs if j["name"] == "bench-run"), None)
            if job and job["state"] == "training" and job.get("step"):
                break
            if job is None or job["state"] not in ("queued", "training"):
                raise SystemExit(f"bench_lab: the page's run did not start: {job}")
            time.sleep(0.5)
        out["job_at_start"] = job
        out["load_at_start"] = load()
        for tab in [t for t in args.tabs if t != "train"]:
            page = ctx.new_page()
            page.goto(f"{url}/lab#train")
            drawn(page, "train", args.timeout)
            r = click_render(page, tab, args.timeout)
            page.close()
            job = next((j for j in httpx.get(f"{url}/api/lab/jobs", timeout=10).json()["jobs"]
                        if j["name"] == "bench-run"), None)
            r["job_state"] = job["state"] if job else "ended"
            out["tabs"][tab] = r
            print(f"bench_lab: while training {tab}: {r['s']} s (run {r['job_state']}, step "
                  f"{job.get('step') if job else '-'})", flush=True)
        out["job_at_end"] = job
        out["load_at_end"] = load()
        trainer.locator("#train-stop").click()  # as a reader would: the run checkpoints and ends
        trainer.wait_for_selector("#train-state[data-state=stopped], #train-state[data-state=done]",
                                  state="attached", timeout=60000)
        ctx.close()
    finally:
        browser.close()
    return out


def markdown(res: dict[str, Any]) -> str:
    goal = res["config"]["goal_s"]
    fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        "# The lab's first renders", "",
        f"{res['date']}, {res['machine']['cpus']} CPUs ({res['machine']['processor']}), torch "
        f"{res['machine']['torch']}, Chromium via Playwright. Load average (1, 5, 15 min): start "
        f"{res['load']['start']}, end {res['load']['end']}. Models: {res['config']['cache']} "
        f"({', '.join(f'{k} trained now in {v} s' for k, v in res['trained'].items()) or 'all cached'}).", "",
        f"Seconds until the tab is drawn (`data-drawn`). *first*: a fresh server (warmed up) and browser, from the "
        f"navigation to `/lab#tab`; the goal is under {goal:g} s. *cold*: a fresh browser context on a server "
        f"already used. *warm*: the tab clicked on a loaded page, median (min-max) of {res['config']['repeats']}. "
        f"*training*: clicked while a run started from the train tab trains.", "",
        "| tab | first | goal | cold | warm | training | |", "|---|---:|:---:|---:|---:|---:|---|"]
    for tab in res["config"]["tabs"]:
        f, c = res["first"].get(tab, {}), res["cold"].get(tab, {})
        w = [r["s"] for r in res["warm"].get(tab, []) if r["s"] is not None]
        t = res["training"]["tabs"].get(tab, {}) if res.get("training") else {}
        errors = [r["error"] for r in [f, c, t, *res["warm"].get(tab, [])] if r and r.get("error")]
        ok = f.get("s") is not None and f["s"] < goal and f.get("ok")
        warm = f"{statistics.median(w):.2f} ({min(w):.2f}-{max(w):.2f})" if w else "—"
        lines.append(f"| {tab} | {fmt(f.get('s'))} | {'yes' if ok else '**no**'} | {fmt(c.get('s'))} | {warm} | "
                     f"{fmt(t.get('s'))} | {'; '.join(errors)[:200]} |")
    s = res["servers"]
    if s:
        lines += ["", f"Each fresh server answered after {min(x['answers_s'] for x in s):.1f}-"
                      f"{max(x['answers_s'] for x in s):.1f} s and warmed up in the background in "
                      f"{min(x['warm_up_s'] for x in s):.1f}-{max(x['warm_up_s'] for x in s):.1f} s more "
                      f"(its steps: {s[-1]['warm_up'].get('steps')})."]
    if res.get("training"):
        tr = res["training"]
        lines += ["", f"During the *training* column the page's run (`{tr['job_at_start'].get('name')}`, one thread) "
                      f"was {tr['job_at_start'].get('state')} at step {tr['job_at_start'].get('step')} when the "
                      f"clicks began and {(tr.get('job_at_end') or {}).get('state', 'ended')} at step "
                      f"{(tr.get('job_at_end') or {}).get('step')} when they ended; load average "
                      f"{tr['load_at_start']} then {tr['load_at_end']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from playwright import sync_api

    import torch

    cache = (args.cache or lab_models.default_cache()).expanduser().resolve()
    config = {"cache": str(cache), "tabs": args.tabs, "repeats": args.repeats, "goal_s": args.goal,
              "train_budget_s": args.train_budget, "timeout_s": args.timeout,
              "recipes": {n: {"cell": r.cell, "feeding": r.feeding, "budget_s": r.budget_s}
                          for n, r in lab_models.RECIPES.items()}}
    machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    print(f"bench_lab: {config}\nbench_lab: machine {machine}, load average {load()}", flush=True)
    res: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"), "config": config,
                           "machine": machine, "load": {"start": load()}}
    res["trained"] = build_models(cache)
    work = Path(tempfile.mkdtemp(prefix="bench-lab-"))
    try:
        with sync_api.sync_playwright() as p:
            res["load"]["first"] = load()
            res["first"], res["servers"] = first_renders(args, p, cache, work)
            server = Server(cache, work / "runs", work / "server.log")
            try:
                server.wait()
                res["load"]["cold_warm"] = load()
                res["cold"], res["warm"] = later_renders(args, p, server.url)
                res["load"]["training"] = load()
                res["training"] = while_training(args, p, server.url)
            finally:
                server.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["load"]["end"] = load()
    write_results(args.out / f"{args.name}.json", res, markdown)
    runs = [res["first"].get(t) for t in args.tabs] + [res["cold"].get(t) for t in args.tabs]
    runs += [r for t in args.tabs for r in res["warm"].get(t, [])] + list(res["training"]["tabs"].values())
    failed = [r for r in runs if r is not None and not r["ok"]]
    if failed:
        print(f"bench_lab: {len(failed)} render(s) failed: {failed[0]['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The web server under load: concurrent clients streaming samples on loopback (issue 7).

Starts the real server (``rnnlab.serve.serve`` in a subprocess, 127.0.0.1, a free port),
then ``--clients`` clients each send ``POST /api/generate`` requests one after another for
``--duration`` seconds, reading every answer as it streams. Each answer is checked whole:
status 200, every line valid JSON, a start line, exactly ``--length`` token lines numbered
0.. in order, each one vocabulary symbol with ``--top`` candidates whose probabilities lie
in [0, 1] and sum to at most 1, and an end line whose text is the prime plus the tokens.
After the load, a sample of the answers is regenerated locally with
``rnnlab.sampling.generate`` and the same seed: the texts must be equal.

Measured per request: time to the first generated character (from sending the request)
and total time; reported as percentiles, with requests and characters per second over the
run. The clients share the machine's cores with the server (it is one machine), so these
are the numbers of a loaded 2-core box, not of the server alone.

Without ``--checkpoint`` a small model is trained first (on rnnlab's own source code, a few
seconds); its size is printed and recorded.

    .venv/bin/python benchmarks/bench_serve.py                           # 50 clients, 20 s
    .venv/bin/python benchmarks/bench_serve.py --clients 10 --duration 5 --name serve_smoke
    .venv/bin/python benchmarks/bench_serve.py --checkpoint runs/demo --length 300

Writes ``benchmarks/results/<name>.json`` and ``<name>.md`` (``--name`` defaults to
``serve``). Exits 1 if any answer was incomplete or wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import rnnlab
from rnnlab.checkpoint import load_model
from rnnlab.config import DataConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig
from rnnlab.sampling import generate
from rnnlab.train import train

RESULTS = Path(__file__).resolve().parent / "results"


def train_small(folder: Path, cell: str, hidden: int, layers: int, steps: int) -> Path:
    """A small model trained for ``steps`` steps on rnnlab's own source: enough to serve."""
    src = Path(rnnlab.__file__).parent
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(src.rglob("*.py")))
    (folder / "corpus.txt").write_text(text, encoding="utf-8")
    out = folder / "run"
    train(RunConfig(data=DataConfig(data=str(folder / "corpus.txt")),
                    model=ModelConfig(cell=cell, hidden_size=hidden, num_layers=layers),
                    train=TrainConfig(batch_size=16, seq_len=50, max_steps=steps, eval_interval=steps,
                                      log_interval=steps, seed=1, out=str(out))), progress=False)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, port: int, workers: int, log: Path) -> subprocess.Popen:
    code = (f"from rnnlab.serve import serve; serve([{str(checkpoint)!r}], host='127.0.0.1', port={port}, "
            f"workers={workers}, log_level='warning')")
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/models", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"bench_serve: the server did not start: {log.read_text()[-2000:]}")


def check_answer(lines: list[str], req: dict[str, Any], symbols: set[str]) -> str | None:
    """What is wrong with one streamed answer (None: complete and correct)."""
    try:
        events = [json.loads(line) for line in lines]
    except json.JSONDecodeError as e:
        return f"invalid JSON line ({e.msg})"
    n = req["length"]
    if len(events) != n + 2:
        return f"{len(events)} lines, expected {n + 2}"
    start, tokens, end = events[0], events[1:-1], events[-1]
    if start.get("type") != "start" or end.get("type") != "end":
        return "no start or end line"
    pieces = []
    for k, e in enumerate(tokens):
        if e.get("type") != "token" or e.get("i") != k:
            return f"line {k + 1} is not token {k}"
        if e["text"] not in symbols:
            return f"token {k} {e['text']!r} is not in the vocabulary"
        ps = [c["p"] for c in e["top"]]
        if len(ps) != req["top"] or not all(0 <= p <= 1 for p in ps) or sum(ps) > 1 + 1e-9:
            return f"token {k} has a bad top list {ps}"
        pieces.append(e["text"])
    if end.get("generated") != n or end.get("text") != req["prime"] + "".join(pieces):
        return "the end line does not match the tokens"
    return None


async def client(cid: int, http: httpx.AsyncClient, base: dict[str, Any], deadline: float, symbols: set[str],
                 records: list[dict[str, Any]]) -> None:
    k = 0
    while time.perf_counter() < deadline:
        req = {**base, "seed": cid * 1_000_000 + k}
        k += 1
        t0 = time.perf_counter()
        first = None
        rec: dict[str, Any] = {"client": cid, "seed": req["seed"], "start": t0}
        try:
            async with http.stream("POST", "/api/generate", json=req) as resp:
                if resp.status_code != 200:
                    rec["error"] = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                else:
                    lines = []
                    async for line in resp.aiter_lines():
                        if not line:
                            continue
                        if first is None and line.startswith('{"type":"token"'):
                            first = time.perf_counter() - t0
                        lines.append(line)
                    rec["error"] = check_answer(lines, req, symbols)
                    if rec["error"] is None:
                        rec["text"] = json.loads(lines[-1])["text"]
        except (httpx.HTTPError, OSError) as e:
            rec["error"] = f"{type(e).__name__}: {e}"
        rec["ttfc"] = first
        rec["total"] = time.perf_counter() - t0
        records.append(rec)


async def load(url: str, args: argparse.Namespace, symbols: set[str]) -> tuple[list[dict[str, Any]], float]:
    base = {"model": 0, "prime": args.prime, "length": args.length, "strategy": "sample",
            "temperature": args.temperature, "top": args.top}
    records: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=args.clients + 5, max_keepalive_connections=args.clients + 5)
    timeout = httpx.Timeout(args.duration + args.grace)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:
        t0 = time.perf_counter()
        deadline = t0 + args.duration
        tasks = [asyncio.create_task(client(i, http, base, deadline, symbols, records)) for i in range(args.clients)]
        # clients start no request after the deadline; one in flight then has `grace` seconds to finish
        done, pending = await asyncio.wait(tasks, timeout=args.duration + args.grace)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.perf_counter() - t0
    for t in done:
        if t.exception() is not None:
            records.append({"error": f"client crashed: {t.exception()!r}", "ttfc": None, "total": None})
    if pending:
        records.append({"error": f"{len(pending)} client(s) still running after the grace period", "ttfc": None,
                        "total": None})
    return records, elapsed


def pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {k: None for k in ("min", "p50", "p90", "p99", "max", "mean")}
    a = np.asarray(values)
    return {"min": float(a.min()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "mean": float(a.mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="serve this checkpoint or run folder (default: train a small one)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds during which clients start requests")
    ap.add_argument("--grace", type=float, default=60.0, help="seconds a request in flight at the end may still take")
    ap.add_argument("--length", type=int, default=200, help="characters generated per request")
    ap.add_argument("--prime", default="def ", help="the prime of every request")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top", type=int, default=5, help="next-character candidates per streamed character")
    ap.add_argument("--workers", type=int, default=4, help="the server's model threads")
    ap.add_argument("--verify", type=int, default=10, help="answers regenerated locally and compared afterwards")
    ap.add_argument("--cell", default="lstm", help="the small model trained without --checkpoint")
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--name", default="serve", help="results file name (without extension)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args()
    if args.clients < 1 or args.duration <= 0 or args.length < 1:
        ap.error("--clients and --length must be >= 1 and --duration > 0")

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        ckpt = args.checkpoint or train_small(tmp_path, args.cell, args.hidden_size, args.num_layers, args.train_steps)
        train_s = 0.0 if args.checkpoint else time.perf_counter() - t
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(ckpt, port, args.workers, tmp_path / "server.log")
        try:
            info = httpx.get(f"{url}/api/models/0").json()
            config = {
                "clients": args.clients, "duration_s": args.duration, "length": args.length, "prime": args.prime,
                "temperature": args.temperature, "top": args.top, "server_workers": args.workers,
                "model": {k: info.get(k) for k in ("name", "cell", "num_layers", "hidden_size", "vocab_size",
                                                   "parameters", "step")},
                "checkpoint": str(args.checkpoint) if args.checkpoint else f"trained here for {args.train_steps} steps",
                "url": url, "python": platform.python_version(), "cpus": os.cpu_count(),
                "load_average": os.getloadavg(), "date": dt.datetime.now().isoformat(timespec="seconds"),
            }
            print("bench_serve configuration:", json.dumps(config, indent=2), flush=True)
            records, elapsed = asyncio.run(load(url, args, set(info["symbols"])))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        # correctness beyond the format: the same seed gives the text rnnlab.sampling gives
        model, vocab, _ = load_model(ckpt)
        good = [r for r in records if r.get("error") is None]
        mismatches = 0
        for r in good[: args.verify]:
            want = generate(model, vocab, SampleConfig(prime=args.prime, length=args.length,
                                                       temperature=args.temperature, seed=r["seed"]))[0]
            if want != r["text"]:
                mismatches += 1
                r["error"] = "text differs from rnnlab.sampling.generate with the same seed"

    failed = [r for r in records if r.get("error") is not None]
    ok = [r for r in records if r.get("error") is None]
    result = {
        "config": config, "train_seconds": round(train_s, 1), "elapsed_s": elapsed,
        "requests": len(records), "complete_and_correct": len(ok), "failed": len(failed),
        "verified_against_sampling": min(args.verify, len(good)), "verify_mismatches": mismatches,
        "errors": sorted({r["error"] for r in failed})[:20],
        "requests_per_s": len(ok) / elapsed, "chars_per_s": len(ok) * args.length / elapsed,
        "time_to_first_char_s": pct([r["ttfc"] for r in ok if r["ttfc"] is not None]),
        "total_s": pct([r["total"] for r in ok]),
        "per_client_requests": pct([sum(1 for r in ok if r["client"] == c) for c in range(args.clients)]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"written to {out} and {out.with_suffix('.md')}")
    return 1 if failed or not ok else 0


def markdown(r: dict[str, Any]) -> str:
    c, m = r["config"], r["config"]["model"]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{1000 * x:,.0f}"

    rows = [f"| {name} | {ms(d['p50'])} | {ms(d['p90'])} | {ms(d['p99'])} | {ms(d['max'])} | {ms(d['mean'])} |"
            for name, d in (("time to first character", r["time_to_first_char_s"]), ("whole answer", r["total_s"]))]
    return "\n".join([
        "# Web server under load (bench_serve.py)", "",
        f"{c['clients']} concurrent clients on loopback for {c['duration_s']:g} s, each streaming "
        f"`POST /api/generate` answers of {c['length']} characters one after another (prime {c['prime']!r}, "
        f"temperature {c['temperature']}, top {c['top']} candidates per character); server with "
        f"{c['server_workers']} model threads; model {m['cell']} {m['num_layers']} x {m['hidden_size']} "
        f"({m['parameters']:,} parameters, vocabulary {m['vocab_size']}); {c['cpus']} CPUs shared by the server "
        f"and the clients; load average at the start {', '.join(f'{x:.2f}' for x in c['load_average'])}; "
        f"{c['date']}.", "",
        f"* answers: {r['requests']}, complete and correct {r['complete_and_correct']}, failed {r['failed']}"
        + (f" ({'; '.join(r['errors'])})" if r["errors"] else ""),
        f"* {r['verified_against_sampling']} answers regenerated with `rnnlab.sampling.generate` and the same "
        f"seed: {r['verify_mismatches']} differed",
        f"* throughput: {r['requests_per_s']:.2f} answers/s, {r['chars_per_s']:,.0f} characters/s "
        f"over {r['elapsed_s']:.1f} s",
        f"* complete answers per client (fairness): min {r['per_client_requests']['min']:g}, "
        f"median {r['per_client_requests']['p50']:g}, max {r['per_client_requests']['max']:g}",
        "", "| latency (ms) | p50 | p90 | p99 | max | mean |", "|---|---:|---:|---:|---:|---:|", *rows, "",
    ])


if __name__ == "__main__":
    sys.exit(main())

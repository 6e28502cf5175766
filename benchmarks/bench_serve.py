"""The web server under load, side by side with the library: concurrent clients streaming samples on loopback.

First the library's own rate, in this process: ``rnnlab.sampling.generate`` of ``--length`` characters
for one stream and for ``--library-batch`` streams at once. Then the real server (``rnnlab.serve.serve``
in a subprocess, 127.0.0.1, a free port) under two loads: one client, then ``--clients`` clients, each
sending ``POST /api/generate`` requests one after another for ``--duration`` seconds on a keep-alive
connection and reading every answer as it streams (a lean HTTP/1.1 client on asyncio's streams, so that the
load generator takes few of the cores it shares with the server). After the load each answer is checked
whole: status 200, every line valid JSON, a start line,
exactly ``--length`` token lines numbered 0.. in order, each one vocabulary symbol with ``--top``
candidates whose probabilities lie in [0, 1] and sum to at most 1, and an end line whose text is the
prime plus the tokens. After the load, a sample of the answers is regenerated locally with
``rnnlab.sampling.generate`` and the same seed: the texts must be equal, or differ by a draw within
rounding of a boundary (products of another batch size round differently); those are counted apart.

Measured per request: time to the first generated character (from sending the request) and total
time, as percentiles, with requests and characters per second over the run, the writes (HTTP chunks) per
answer, and the cores the server and the clients used (their CPU time over the phase). The server's memory
(peak resident set, ``VmHWM``) is read before and after the load and checked against the bound its
streams allow (the model, its three packed step copies, each stream's state and its whole answer
buffered). The clients share the machine's cores with the server, so these are the numbers of a
loaded box, not of the server alone; the load average at the start and the end is recorded.

Without ``--checkpoint`` a 2 x 512 LSTM is trained for a few steps first (on rnnlab's own source code).

    .venv/bin/python benchmarks/bench_serve.py                           # 1 and 50 clients, 2 x 512 LSTM
    .venv/bin/python benchmarks/bench_serve.py --clients 10 --duration 5 --name serve_smoke
    .venv/bin/python benchmarks/bench_serve.py --quick --name serve_quick    # shorter phases, fewer checks
    .venv/bin/python benchmarks/bench_serve.py --checkpoint runs/demo --length 300

Writes ``benchmarks/results/<name>.json`` and ``<name>.md`` (``--name`` defaults to
``serve``). Exits 1 if any answer was incomplete or wrong, or the memory bound was passed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import torch

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


def start_server(checkpoint: Path, port: int, workers: int, log: Path, max_streams: int) -> subprocess.Popen:
    code = (f"from rnnlab.serve import serve; serve([{str(checkpoint)!r}], host='127.0.0.1', port={port}, "
            f"workers={workers}, log_level='warning', max_streams={max_streams})")
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


class Connection:
    """One client's keep-alive HTTP/1.1 connection, by hand on asyncio's streams: a POST with a JSON body, and
    the answer's body as it comes (chunked, or of a Content-Length). The load generator shares the cores with the
    server, and httpx's layers cost several times the CPU per request and per chunk (measured: the client's CPU is
    recorded with the results), so a lean client leaves the server the cores it would have on its own."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, AsyncIterator[bytes]]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json"
                          f"\r\nContent-Length: {len(body)}\r\n\r\n".encode("latin-1") + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
        return status, self._body(headers)

    async def _body(self, headers: dict[bytes, bytes]) -> AsyncIterator[bytes]:
        reader = self.reader
        assert reader is not None
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)  # the chunk and its CRLF
                if size == 0:
                    return
                yield data[:-2]
        else:
            yield await reader.readexactly(int(headers.get(b"content-length", b"0")))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def client(cid: int, conn: Connection, base: dict[str, Any], deadline: float,
                 records: list[dict[str, Any]]) -> None:
    k = 0
    try:
        while time.perf_counter() < deadline:
            req = {**base, "seed": cid * 1_000_000 + k}
            k += 1
            t0 = time.perf_counter()
            first = None
            rec: dict[str, Any] = {"client": cid, "seed": req["seed"], "start": t0, "first": k == 1}
            try:
                status, body = await conn.post("/api/generate", json.dumps(req).encode("utf-8"))
                # the bytes as they come; the answer is checked after the load (checked here, the answers of
                # many clients ending in the same round would hold the loop, and so the next requests, for long)
                chunks = []
                async for chunk in body:
                    if first is None and b'{"type":"token"' in chunk:
                        first = time.perf_counter() - t0
                    chunks.append(chunk)
                rec["chunks"] = len(chunks)
                if status != 200:
                    rec["error"] = f"HTTP {status}: {b''.join(chunks)[:200]!r}"
                else:
                    rec["body"], rec["request"] = b"".join(chunks), req
            except (OSError, EOFError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                rec["error"] = f"{type(e).__name__}: {e}"
                conn.close()
            rec["ttfc"] = first
            rec["total"] = time.perf_counter() - t0
            records.append(rec)
    finally:
        conn.close()


async def load(url: str, args: argparse.Namespace, symbols: set[str], clients: int,
               duration: float) -> tuple[list[dict[str, Any]], float]:
    base = {"model": 0, "prime": args.prime, "length": args.length, "strategy": "sample",
            "temperature": args.temperature, "top": args.top}
    records: list[dict[str, Any]] = []
    host, port = url.removeprefix("http://").split(":")
    t0 = time.perf_counter()
    deadline = t0 + duration
    tasks = [asyncio.create_task(client(i, Connection(host, int(port)), base, deadline, records))
             for i in range(clients)]
    # clients start no request after the deadline; one in flight then has `grace` seconds to finish
    done, pending = await asyncio.wait(tasks, timeout=duration + args.grace)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - t0
    for rec in records:
        body = rec.pop("body", None)
        if body is not None:
            lines = [x for x in body.decode("utf-8").split("\n") if x]
            rec["error"] = check_answer(lines, rec.pop("request"), symbols)
            if rec["error"] is None:
                rec["text"] = json.loads(lines[-1])["text"]
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


def library_rates(model: Any, vocab: Any, args: argparse.Namespace) -> dict[str, float]:
    """``generate``'s characters per second for one stream and for ``--library-batch`` streams (best of 3), called
    from a thread of its own, as the server's scheduler calls it. (On a machine loaded far beyond its cores, torch's
    two threads stepping from the main thread were measured 30-100x slower than from another thread, where they
    stepped as fast as on a quiet machine; on a quiet machine the two are the same.)"""
    out = {}
    for key, n in (("one_stream", 1), ("batch", args.library_batch)):
        cfg = SampleConfig(prime=args.prime, length=args.length, temperature=args.temperature, num_samples=n, seed=1)

        def best(c: SampleConfig = cfg) -> float:
            generate(model, vocab, c)  # warm: the kernels built, the weights packed
            return min(_timed(lambda: generate(model, vocab, c)) for _ in range(3))

        out[key] = n * args.length / in_thread(best)
    return out


def in_thread(fn: Any) -> Any:
    """``fn()`` run in a thread of its own, its result returned."""
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    return box[0]


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cpu_seconds() -> float:
    """This process's CPU time (user and system), seconds."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """Another process's CPU time (user and system, every thread), seconds, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> dict[str, int]:
    """The process's resident set now and at its peak (bytes), from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return {"rss": fields.get("VmRSS", 0), "peak": fields.get("VmHWM", 0)}


def memory_bound(parameters: int, layers: int, hidden: int, vocab: int, streams: int, length: int,
                 line_bytes: int) -> int:
    """What the streams may add to the server's memory: three packed copies of the weights (float32), and per
    stream its LSTM state, a row of logits and probabilities (float64), its whole answer buffered, plus
    64 MiB for the allocator's and the threads' slack."""
    per_stream = 2 * layers * hidden * 4 + 3 * vocab * 8 + (length + 2) * line_bytes
    return 3 * parameters * 4 + streams * per_stream + 64 * 2**20


def phase(records: list[dict[str, Any]], elapsed: float, clients: int, length: int) -> dict[str, Any]:
    failed = [r for r in records if r.get("error") is not None]
    ok = [r for r in records if r.get("error") is None]
    return {"clients": clients, "elapsed_s": elapsed, "requests": len(records), "complete_and_correct": len(ok),
            "failed": len(failed), "errors": sorted({r["error"] for r in failed})[:20],
            "requests_per_s": len(ok) / elapsed, "chars_per_s": len(ok) * length / elapsed,
            "time_to_first_char_s": pct([r["ttfc"] for r in ok if r["ttfc"] is not None]),
            # apart: every client's first request (all sent at once) and the requests after (one as another ends)
            "time_to_first_char_first_requests_s": pct([r["ttfc"] for r in ok if r["ttfc"] is not None and r["first"]]),
            "time_to_first_char_later_requests_s": pct([r["ttfc"] for r in ok if r["ttfc"] is not None
                                                        and not r["first"]]),
            "total_s": pct([r["total"] for r in ok]),
            "writes_per_answer": pct([r["chunks"] for r in ok if "chunks" in r]),
            "per_client_requests": pct([sum(1 for r in ok if r["client"] == c) for c in range(clients)])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="serve this checkpoint or run folder (default: train one)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients of the loaded phase")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds during which clients start requests")
    ap.add_argument("--solo-duration", type=float, default=10.0, help="seconds of the one-client phase")
    ap.add_argument("--grace", type=float, default=60.0, help="seconds a request in flight at the end may still take")
    ap.add_argument("--length", type=int, default=300, help="characters generated per request")
    ap.add_argument("--prime", default="def ", help="the prime of every request")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top", type=int, default=5, help="next-character candidates per streamed character")
    ap.add_argument("--workers", type=int, default=4, help="the server's threads for scoring and activations")
    ap.add_argument("--library-batch", type=int, default=64, help="streams of generate's batched rate")
    ap.add_argument("--verify", type=int, default=20, help="answers regenerated locally and compared afterwards")
    ap.add_argument("--cell", default="lstm", help="the model trained without --checkpoint")
    ap.add_argument("--hidden-size", type=int, default=512)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--name", default="serve", help="results file name (without extension)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--quick", action="store_true",
                    help="a quick look: phases of 8 and 5 seconds, 5 answers verified (overrides those options)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.solo_duration, args.verify = 8.0, 5.0, 5
    if args.clients < 1 or args.duration <= 0 or args.solo_duration <= 0 or args.length < 1:
        ap.error("--clients and --length must be >= 1 and the durations > 0")

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        ckpt = args.checkpoint or train_small(tmp_path, args.cell, args.hidden_size, args.num_layers, args.train_steps)
        train_s = 0.0 if args.checkpoint else time.perf_counter() - t
        model, vocab, _ = load_model(ckpt)
        load_start = os.getloadavg()
        library_before = library_rates(model, vocab, args)
        print(f"generate: {library_before['one_stream']:,.0f} chars/s one stream, {library_before['batch']:,.0f} "
              f"chars/s {args.library_batch} streams", flush=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(ckpt, port, args.workers, tmp_path / "server.log", max_streams=args.clients)
        phases: dict[str, Any] = {}
        try:
            info = httpx.get(f"{url}/api/models/0").json()
            config = {
                "clients": args.clients, "duration_s": args.duration, "solo_duration_s": args.solo_duration,
                "length": args.length, "prime": args.prime, "temperature": args.temperature, "top": args.top,
                "library_batch": args.library_batch,
                "model": {k: info.get(k) for k in ("name", "cell", "num_layers", "hidden_size", "vocab_size",
                                                   "parameters", "step")},
                "checkpoint": str(args.checkpoint) if args.checkpoint else f"trained here for {args.train_steps} steps",
                "url": url, "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "date": dt.datetime.now().isoformat(timespec="seconds"),
            }
            print("bench_serve configuration:", json.dumps(config, indent=2), flush=True)
            symbols = set(info["symbols"])
            before = peak_rss(proc.pid)
            records: list[dict[str, Any]] = []
            for key, clients, duration in (("one_client", 1, args.solo_duration),
                                           ("many_clients", args.clients, args.duration)):
                client_cpu, server_cpu = cpu_seconds(), process_cpu_seconds(proc.pid)
                recs, elapsed = asyncio.run(load(url, args, symbols, clients, duration))
                phases[key] = phase(recs, elapsed, clients, args.length)
                # the cores each side used: the clients' (this process) and the server's, over the phase
                phases[key]["client_cpu_cores"] = (cpu_seconds() - client_cpu) / elapsed
                phases[key]["server_cpu_cores"] = (process_cpu_seconds(proc.pid) - server_cpu) / elapsed
                records += recs
                p = phases[key]
                print(f"{clients} client(s): {p['chars_per_s']:,.0f} chars/s, first character p99 "
                      f"{p['time_to_first_char_s']['p99']}", flush=True)
            after = peak_rss(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        load_end = os.getloadavg()
        # the library again, after the server: on a shared machine the load moves; the better of the two counts
        library_after = library_rates(model, vocab, args)
        library = {k: max(library_before[k], library_after[k]) for k in library_before}
        # correctness beyond the format: the same seed gives the text rnnlab.sampling gives
        good = [r for r in records if r.get("error") is None]
        verified, mismatches = 0, 0
        step = max(1, len(good) // max(1, args.verify))
        for r in good[::step][: args.verify]:
            want = in_thread(lambda r=r: generate(model, vocab, SampleConfig(
                prime=args.prime, length=args.length, temperature=args.temperature, seed=r["seed"]))[0])
            verified += 1
            mismatches += want != r["text"]

    line_bytes = 64 + args.top * 40 + 8 * max(len(x) for x in symbols)  # a token line's most, with escapes
    bound = memory_bound(config["model"]["parameters"], args.num_layers if args.checkpoint is None else
                         config["model"]["num_layers"], config["model"]["hidden_size"], config["model"]["vocab_size"],
                         args.clients, args.length, line_bytes)
    grown = after["peak"] - before["rss"]
    many, one = phases["many_clients"], phases["one_client"]
    goals = {
        "one_stream_ratio": one["chars_per_s"] / library["one_stream"],
        "many_clients_ratio": many["chars_per_s"] / library["batch"],
        "first_char_p99_s": many["time_to_first_char_s"]["p99"],
    }
    goals["met"] = {"one_stream >= 0.8x": goals["one_stream_ratio"] >= 0.8,
                    "many_clients >= 0.5x": goals["many_clients_ratio"] >= 0.5,
                    "first_char_p99 < 0.5 s": goals["first_char_p99_s"] is not None and goals["first_char_p99_s"] < 0.5}
    failed = sum(p["failed"] for p in phases.values())
    result = {
        "config": config, "train_seconds": round(train_s, 1), "load_average_start": load_start,
        "load_average_end": load_end, "library_chars_per_s": library, "library_before_server": library_before,
        "library_after_server": library_after, "phases": phases, "goals": goals,
        "verified_against_sampling": verified, "verify_rounding_differences": mismatches,
        "memory": {"before_load_rss": before["rss"], "peak_rss": after["peak"], "grown": grown, "bound": bound,
                   "within_bound": grown <= bound},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"written to {out} and {out.with_suffix('.md')}")
    # a rounding difference is legal but must stay rare: more than one in ten verified answers is a bug
    wrong = failed or not good or mismatches > max(1, verified // 10) or grown > bound
    return 1 if wrong else 0


def markdown(r: dict[str, Any]) -> str:
    c, m, g, mem, lib = r["config"], r["config"]["model"], r["goals"], r["memory"], r["library_chars_per_s"]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{1000 * x:,.0f}"

    def mib(x: int) -> str:
        return f"{x / 2**20:,.0f} MiB"

    rows = []
    for p in r["phases"].values():
        for name, d in (("time to first character", p["time_to_first_char_s"]), ("whole answer", p["total_s"])):
            rows.append(f"| {p['clients']} | {name} | {ms(d['p50'])} | {ms(d['p90'])} | {ms(d['p99'])} | "
                        f"{ms(d['max'])} | {ms(d['mean'])} |")
    one, many = r["phases"]["one_client"], r["phases"]["many_clients"]
    met = g["met"]
    return "\n".join([
        "# Web server under load, beside the library (bench_serve.py)", "",
        f"Model {m['cell']} {m['num_layers']} x {m['hidden_size']} ({m['parameters']:,} parameters, vocabulary "
        f"{m['vocab_size']}); answers of {c['length']} characters (prime {c['prime']!r}, temperature "
        f"{c['temperature']}, top {c['top']} candidates per character), each client sending one request after "
        f"another; {c['cpus']} CPUs shared by the server, the clients and the other work on the machine (load "
        f"average at the start {', '.join(f'{x:.2f}' for x in r['load_average_start'])}, at the end "
        f"{', '.join(f'{x:.2f}' for x in r['load_average_end'])}); torch {c['torch']} ({c.get('torch_threads')} threads, "
        f"OMP_NUM_THREADS {c.get('omp_num_threads') or 'unset'}), {c['date']}. The library "
        f"was measured before and after the server (one stream {r['library_before_server']['one_stream']:,.0f} and "
        f"{r['library_after_server']['one_stream']:,.0f} chars/s, {c['library_batch']} streams "
        f"{r['library_before_server']['batch']:,.0f} and {r['library_after_server']['batch']:,.0f}); the better "
        "of each pair is its rate below.", "",
        "| | the server | the library (`rnnlab.sampling.generate`) | ratio | goal |",
        "|---|---:|---:|---:|---|",
        f"| one client | {one['chars_per_s']:,.0f} chars/s | {lib['one_stream']:,.0f} chars/s (one stream) | "
        f"{g['one_stream_ratio']:.2f}x | >= 0.8x: {'met' if met['one_stream >= 0.8x'] else 'not met'} |",
        f"| {many['clients']} clients | {many['chars_per_s']:,.0f} chars/s in total | {lib['batch']:,.0f} chars/s "
        f"({c['library_batch']} streams) | {g['many_clients_ratio']:.2f}x | >= 0.5x: "
        f"{'met' if met['many_clients >= 0.5x'] else 'not met'} |",
        f"| first character p99, {many['clients']} clients | {ms(g['first_char_p99_s'])} ms | | | < 500 ms: "
        f"{'met' if met['first_char_p99 < 0.5 s'] else 'not met'} |", "",
        *[f"* {p['clients']} client(s) for {p['elapsed_s']:.1f} s: {p['requests']} answers, complete and correct "
          f"{p['complete_and_correct']}, failed {p['failed']}" + (f" ({'; '.join(p['errors'])})" if p["errors"] else "")
          + f"; answers per client min {p['per_client_requests']['min']:g}, max {p['per_client_requests']['max']:g}"
          for p in r["phases"].values()],
        *[f"* {p['clients']} client(s): the server used {p['server_cpu_cores']:.2f} cores, the clients "
          f"{p['client_cpu_cores']:.2f}; writes (HTTP chunks) per answer: mean {p['writes_per_answer']['mean']:.1f}"
          for p in r["phases"].values() if "server_cpu_cores" in p and p["writes_per_answer"]["mean"] is not None],
        *[f"* {p['clients']} client(s), time to first character of each client's first request (sent together): "
          f"p50 {ms(p['time_to_first_char_first_requests_s']['p50'])} ms, p99 "
          f"{ms(p['time_to_first_char_first_requests_s']['p99'])} ms; of the later requests: p50 "
          f"{ms(p['time_to_first_char_later_requests_s']['p50'])} ms, p99 "
          f"{ms(p['time_to_first_char_later_requests_s']['p99'])} ms"
          for p in r["phases"].values() if "time_to_first_char_first_requests_s" in p],
        f"* {r['verified_against_sampling']} answers regenerated with `rnnlab.sampling.generate` and the same seed: "
        f"{r['verify_rounding_differences']} differed (a draw within rounding of a boundary)",
        f"* server memory: {mib(mem['before_load_rss'])} resident before the load, peak {mib(mem['peak_rss'])}; "
        f"grown {mib(mem['grown'])}, bound {mib(mem['bound'])} (three packed weight copies, per stream its state, "
        f"logits and whole answer buffered, 64 MiB slack): {'within' if mem['within_bound'] else 'PAST'} it",
        "", "| clients | latency (ms) | p50 | p90 | p99 | max | mean |", "|---:|---|---:|---:|---:|---:|---:|",
        *rows, "",
    ])


if __name__ == "__main__":
    sys.exit(main())

"""Long memory: which cells learn the adding, temporal-order and copy tasks, how fast, and what the cures do.

Every run is ``rnnlab tasks run`` with the task job's defaults (one layer of 128 units, batch 50, Adam,
the learning rate and clipping of ``rnnlab/task_train.py``), the same for every cell, stopping at its
first successful evaluation (metric below baseline / 10) or at the budget (5 minutes; 10 for copy) of the
run's own CPU time with one thread (``--clock cpu``), so that runs side by side, or beside other work, each
get what an idle core would give them.
A variant changes one thing and is a row of its own:

* ``elman``: the recipe as it is (clipping at norm 1 included);
* ``elman-noclip``: without clipping, the plain vanilla RNN;
* ``elman+orthogonal``, ``elman+identity``: the recurrent initialisations;
* ``elman+norm-reg``: the norm-preserving regulariser of Pascanu et al. (2013);
* ``irnn``: ReLU units, identity recurrent weights, zero biases and a learning rate of 1e-4 (Le et al. 2015);
  ``irnn-noclip`` the same without clipping;
* ``lstm``, ``gru``, and ``lstm+chrono``, ``gru+chrono`` (chrono gate biases, Tallec & Ollivier 2018).

A cell of the table is the time to success (and the steps), or the best validation metric and ✗.
Each run is a child process (its command line is the JSON's ``command``), so a run's threads and
memory are its own. The grid takes hours, so it runs in parts (``--tasks``, ``--lengths``,
``--variants``); each part merges into one results file and the Markdown is rewritten from all of it.
The trained runs stay in ``--work``; ``--curves`` draws, for each (task, T), the gradient norm
|d answer / dh_t| of every variant's trained model (its prediction, or the right class's logit) over the
steps of fresh sequences: the cells that succeed carry gradient across T.

    OMP_NUM_THREADS=2 python benchmarks/bench_long_memory.py --tasks adding --lengths 100 200
    python benchmarks/bench_long_memory.py --curves            # after some parts; trains nothing
    python benchmarks/bench_long_memory.py --quick             # a smoke test (numbers mean nothing)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlab.gradients import gradient_norms_per_step
from rnnlab.task_train import load_task_checkpoint

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "long_memory.json"
TASKS = ("adding", "temporal-order", "copy")
LENGTHS = {"adding": (50, 100, 200), "temporal-order": (50, 100, 200), "copy": (50, 100)}
BUDGET = {"adding": 300.0, "temporal-order": 300.0, "copy": 600.0}
VARIANTS: dict[str, list[str]] = {
    "elman": ["--cell", "elman"],
    "elman-noclip": ["--cell", "elman", "--clip-norm", "0"],
    "elman+orthogonal": ["--cell", "elman", "--recurrent-init", "orthogonal"],
    "elman+identity": ["--cell", "elman", "--recurrent-init", "identity"],
    "elman+norm-reg": ["--cell", "elman", "--norm-reg", "NORM_REG"],
    "irnn": ["--cell", "elman-relu", "--recurrent-init", "identity", "--lr", "1e-4"],
    "irnn-noclip": ["--cell", "elman-relu", "--recurrent-init", "identity", "--lr", "1e-4", "--clip-norm", "0"],
    "lstm": ["--cell", "lstm"],
    "lstm+chrono": ["--cell", "lstm", "--gate-init", "chrono"],
    "gru": ["--cell", "gru"],
    "gru+chrono": ["--cell", "gru", "--gate-init", "chrono"],
}


def key(task: str, length: int, variant: str) -> str:
    return f"{task}/{length}/{variant}"


def command(task: str, length: int, variant: str, args: argparse.Namespace, out: Path) -> list[str]:
    # the regulariser sums T - 1 terms: its weight scales as 1 / (T - 1), 0.005 at T = 100 (as in the docs)
    extra = [str(args.norm_reg * 99 / (length - 1)) if a == "NORM_REG" else a for a in VARIANTS[variant]]
    budget = args.budget or BUDGET[task]
    return [sys.executable, "-m", "rnnlab", "tasks", "run", task, "--length", str(length), *extra,
            "--time-budget", f"{budget:g}", "--clock", args.clock, "--seed", str(args.seed),
            "--threads", str(args.threads),
            "--out", str(out), "--json", "--quiet"]


def run_one(task: str, length: int, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    out = args.work / task / str(length) / variant
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cmd = command(task, length, variant, args, out)
    shown = " ".join(["rnnlab"] + cmd[3:])
    print(f"{key(task, length, variant)}: {shown}", flush=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  failed: {err}", flush=True)
        return {"command": shown, "error": err, "load_at_start": load}
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    rec = {"command": shown, "stopped": s["stopped"], "steps": s["steps"], "elapsed_s": s["elapsed_s"],
           "wall_s": round(wall, 1), "steps_to_success": s["steps_to_success"],
           "time_to_success_s": s["time_to_success_s"], "best_val_loss": s["best_val_loss"],
           "best_ratio": s["best_val_loss"] / s["baseline"], "baseline": s["baseline"],
           "val_acc": s.get("val_acc"), "seqs_per_sec": s["seqs_per_sec"], "load_at_start": round(load, 2),
           "run": str(out)}
    solved = rec["time_to_success_s"]
    what = f"solved in {solved:.0f} s, {rec['steps_to_success']} steps" if solved is not None else "not solved"
    print(f"  {what} (best ratio {rec['best_ratio']:.3g}, {s['steps']} steps, load {load:.1f})", flush=True)
    return rec


def merge(path: Path, runs: dict[str, Any], top: dict[str, Any] | None = None, md: bool = False) -> dict[str, Any]:
    """Add ``runs`` (and the top-level entries ``top``) to the results file under a lock, since parts of the
    grid may run at the same time, and return all of it; ``md``: write the Markdown beside it too."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = json.loads(path.read_text()) if path.exists() else {}
        res.setdefault("runs", {}).update(runs)
        res.setdefault("curves", {})
        res.update(top or {})
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        tmp.replace(path)
        if md:
            path.with_suffix(".md").write_text(markdown(res))
    return res


def gradient_curve(run: Path, batch: int, seed: int) -> list[float] | None:
    """|d answer / dh_t| for t = 1..T of the run's best model on ``batch`` fresh sequences (float64): how much
    the answer depends on the state at each step."""
    try:
        ckpt = load_task_checkpoint(run)
    except Exception:  # noqa: BLE001 (a run that failed or was removed: no curve)
        return None
    model = ckpt.build_model().double().eval()
    task = ckpt.config.task.make()
    xb, yb = task.generate(batch, np.random.default_rng([seed, 99]))
    x = model.embed(torch.from_numpy(xb))  # (B, T, I)
    y = torch.from_numpy(yb)

    def answer(out: torch.Tensor) -> torch.Tensor:  # top-layer outputs (B, T, H) -> the answer per example (B,)
        # the prediction itself (adding) or the right class's logit (after the last step; copy: at the K recall
        # steps), not the loss: a solved model's loss is near 0 and so would be its gradient at every step
        pred = model.readout(out)
        if model.kind == "regression":
            return pred
        if model.kind == "classification":
            return pred.gather(1, y[:, None])[:, 0]
        k = ckpt.config.task.copy_len
        return pred[:, -k:].gather(2, y[:, -k:, None])[..., 0].mean(1)

    return [float(v) for v in gradient_norms_per_step(model.rnn, x, loss_fn=answer)]


def plot_curves(res: dict[str, Any], folder: Path) -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = []
    groups: dict[tuple[str, int], list[str]] = {}
    for k in sorted(res.get("curves", {})):
        task, length, _ = k.split("/")
        groups.setdefault((task, int(length)), []).append(k)
    for (task, length), keys in sorted(groups.items()):
        fig = Figure(figsize=(7, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for k in keys:
            v = np.asarray(res["curves"][k], dtype=float)
            run = res["runs"].get(k, {})
            mark = "solved" if run.get("time_to_success_s") is not None else "not solved"
            ax.semilogy(np.arange(1, len(v) + 1), np.maximum(v, 1e-30), label=f"{k.split('/')[2]} ({mark})")
        ax.set_xlabel("step t")
        ax.set_ylabel("|d answer / dh_t| (trained model)")
        ax.set_title(f"{task}, T = {length}: the answer's dependence on each step")
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"long_memory_gradients_{task}_{length}.png"
        fig.savefig(folder / name, dpi=100)
        names.append(name)
    return names


def _cell(run: dict[str, Any] | None) -> str:
    if run is None:
        return ""
    if "error" in run:
        return "error"
    if run["time_to_success_s"] is not None:
        return f"{run['time_to_success_s']:.0f} s ({run['steps_to_success']:,})"
    return f"{run['best_ratio']:.2f} ✗"


def markdown(res: dict[str, Any]) -> str:
    lines = ["# Long memory: time to success", "",
             f"{res['machine']}. Every run: `rnnlab tasks run` with the task job's defaults (1 x 128 units, "
             "batch 50, Adam, the same learning rate and clipping for every cell) and the variant's options; "
             "stop at the first evaluation (every 50 steps) whose metric is below baseline / 10, or at the budget "
             "(5 min; copy 10 min) of the run's own CPU time (`--clock cpu`, one thread: what an idle core "
             "gives, whatever else the machine runs). A cell: training time to success (steps), or the best validation "
             "metric as a fraction of the trivial baseline and ✗. Each run's command and the machine's load when "
             "it started are in the JSON.", ""]
    runs = res["runs"]
    for task in TASKS:
        lengths = sorted({int(k.split("/")[1]) for k in runs if k.startswith(task + "/")})
        if not lengths:
            continue
        lines += [f"## {task}", "", "| variant | " + " | ".join(f"T = {n}" for n in lengths) + " |",
                  "|---|" + "---:|" * len(lengths)]
        for v in VARIANTS:
            cells = [_cell(runs.get(key(task, n, v))) for n in lengths]
            if any(cells):
                lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
    figs = res.get("figures", [])
    if figs:
        lines += ["## Gradient through time of the trained models", ""]
        lines += [f"![{f}]({f})" for f in figs] + [""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--lengths", type=int, nargs="+", default=None, help="T values (default: per task)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--budget", type=float, default=None, help="seconds per run (default 300; copy 600)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="what the budget and the times count: the run's CPU seconds (default: fair beside other "
                         "work; with one thread, the wall time of an idle core) or the wall clock")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--norm-reg", type=float, default=0.005, help="elman+norm-reg's weight at T = 100")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "rnnlab-long-memory",
                    help="where the trained runs are kept (for --curves)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--curves", action="store_true", help="only draw the gradient curves of the kept runs")
    ap.add_argument("--curve-batch", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="smoke test: T = 10, 5 s per run, into --work")
    args = ap.parse_args(argv)
    if args.quick:
        args.lengths, args.budget = [10], 5.0
        args.out = args.work / "long_memory.json"
    machine = (f"{time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, torch "
               f"{torch.__version__}, {args.threads} thread(s) per run, times in {args.clock} seconds")
    print(json.dumps({k: str(v) for k, v in vars(args).items()}))
    if not args.curves:
        for task in args.tasks:
            for length in args.lengths or LENGTHS[task]:
                for variant in args.variants:
                    rec = run_one(task, length, variant, args)
                    res = merge(args.out, {key(task, length, variant): rec})  # parts may run side by side
    res = merge(args.out, {})
    curves = dict(res["curves"])
    for k, run in res["runs"].items():
        if "run" in run and Path(run["run"]).exists():
            curve = gradient_curve(Path(run["run"]), args.curve_batch, args.seed)
            if curve is not None and all(math.isfinite(v) for v in curve):
                curves[k] = curve
    figures = plot_curves({**res, "curves": curves}, args.out.parent)
    res = merge(args.out, {}, {"machine": machine, "curves": curves, "figures": figures}, md=True)
    print(markdown(res))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])

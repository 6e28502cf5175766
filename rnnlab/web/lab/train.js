// The lab's section "train": start a small run, watch its loss curve and samples improve, stop it.
// Its endpoints: /api/lab/train/{options,start,status,stop,sample} (rnnlab/lab/sections/train.py).
"use strict";

Lab.register({
  id: "train",
  title: "Train",
  async mount(el) {
    const { h, svg, api } = Lab;
    const opts = await api("/api/lab/train/options");
    const d = opts.defaults;
    const field = (label, input) => h("label", {}, label, input);
    const text = h("select", { id: "train-text" }, opts.texts.map((t) => h("option", { value: t }, t === "builtin" ? "built-in corpus (Python source)" : t)));
    const cell = h("select", { id: "train-cell" }, opts.cells.map((c) => h("option", { value: c, selected: c === d.cell }, c)));
    const hidden = h("input", { id: "train-hidden", type: "number", min: opts.hidden_size[0], max: opts.hidden_size[1], step: 8, value: d.hidden_size });
    const layers = h("input", { id: "train-layers", type: "number", min: 1, max: opts.num_layers[1], value: d.num_layers });
    const budget = h("input", { id: "train-budget", type: "number", min: opts.time_budget[0], max: opts.time_budget[1], step: 5, value: d.time_budget });
    const name = h("input", { id: "train-name", type: "text", maxlength: 40, placeholder: "cell-size-N", size: 14 });
    const startBtn = h("button", { id: "train-start", type: "button" }, "Start");
    const stopBtn = h("button", { id: "train-stop", type: "button", class: "secondary", disabled: true }, "Stop");
    const stateLine = h("div", { id: "train-state", class: "lab-status", "aria-live": "polite" });
    const bar = h("progress", { id: "train-progress", max: 1, value: 0, "aria-label": "share of the time budget spent" });
    const error = h("div", { class: "lab-error", role: "alert" });
    const chart = h("div", { id: "train-curve" });
    const temp = h("input", { id: "train-temperature", type: "number", min: 0.05, max: 5, step: 0.1, value: 0.8 });
    const sampleBtn = h("button", { id: "train-sample-again", type: "button", class: "secondary", disabled: true }, "Sample now");
    const sampleInfo = h("div", { class: "lab-status", id: "train-sample-info" });
    const sampleText = h("div", { id: "train-sample", class: "lab-text" });
    const after = h("div", { id: "train-after", class: "lab-status" });

    el.append(
      h("p", { class: "muted" }, "A small character-level run, trained in a child process on one thread (the other sections keep the other cores). " +
        "Its folder is an ordinary run: the command line can resume and sample it. One run at a time."),
      h("div", { class: "lab-panel" },
        h("div", { class: "lab-row" }, field("text", text), field("cell", cell), field("units per layer", hidden),
          field("layers", layers), field("time cap (s)", budget), field("name (optional)", name), startBtn, stopBtn),
        error, stateLine, h("div", { class: "lab-progress" }, bar)),
      h("div", { class: "lab-grid" },
        h("div", { class: "lab-panel" }, h("h3", {}, "Loss (bits per character)"), chart),
        h("div", { class: "lab-panel" }, h("h3", {}, "Samples from the latest checkpoint"),
          h("div", { class: "lab-row" }, field("temperature", temp), sampleBtn), sampleInfo, sampleText)),
      after);

    let current = null, timer = null, lastSampleAt = 0, lastSampledStep = null, sampling = false, announced = null;

    function drawCurve(curves) {
      const W = 460, H = 220, L = 44, R = 10, T = 10, B = 30;
      const all = curves.train.concat(curves.val);
      const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "training and validation bits per character against steps",
                                "data-train-points": curves.train.length, "data-val-points": curves.val.length });
      if (!all.length) { root.append(svg("text", { x: L, y: H / 2 }, "no points yet")); chart.replaceChildren(root); return; }
      const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
      const x0 = 0, x1 = Math.max(1, ...xs), y0 = Math.max(0, Math.min(...ys) - 0.2), y1 = Math.max(...ys) + 0.2;
      const X = (v) => L + (v - x0) / (x1 - x0) * (W - L - R), Y = (v) => H - B - (v - y0) / (y1 - y0) * (H - T - B);
      root.append(svg("path", { class: "axis", d: `M${L},${T} V${H - B} H${W - R}` }));
      for (let k = 0; k <= 4; k++) {
        const v = y0 + k / 4 * (y1 - y0);
        root.append(svg("text", { x: L - 4, y: Y(v) + 4, "text-anchor": "end" }, v.toFixed(2)));
      }
      root.append(svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, `step ${x1}`), svg("text", { x: L, y: H - 8 }, "0"));
      if (curves.train.length) {
        root.append(svg("path", { class: "train-line", fill: "none", stroke: "#0a64c8", "stroke-width": 1.5,
                                  d: curves.train.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ") }));
      }
      for (const p of curves.val) root.append(svg("circle", { class: "val-point", cx: X(p[0]), cy: Y(p[1]), r: 3.5, fill: "#c0392b" }));
      const key = svg("g", {}, svg("rect", { x: W - 150, y: T, width: 10, height: 3, fill: "#0a64c8" }), svg("text", { x: W - 136, y: T + 5 }, "training"),
                      svg("circle", { cx: W - 75, cy: T + 2, r: 3.5, fill: "#c0392b" }), svg("text", { x: W - 68, y: T + 5 }, "validation"));
      root.append(key);
      chart.replaceChildren(root);
    }

    async function sample() {
      if (!current || sampling) return;
      sampling = true;
      try {
        const a = await api("/api/lab/train/sample", { name: current, length: 200, temperature: Number(temp.value), seed: 0 });
        sampleText.textContent = a.text;
        sampleInfo.textContent = `${current}, step ${a.step ?? "?"}, temperature ${a.temperature}, seed ${a.seed}`;
        sampleText.dataset.step = String(a.step);
        lastSampledStep = a.step;
      } catch (e) {
        if (e.status !== 503) sampleInfo.textContent = e.message;  // 503: no checkpoint yet
      } finally { sampling = false; }
    }

    function describe(job) {
      if (!job) return "";
      const p = job.state === "training" ? ` ${Math.round(100 * job.fraction)}% of ${job.budget_s} s` : "";
      const loss = job.loss != null ? `, training loss ${(job.loss / Math.LN2).toFixed(3)} bits per character at step ${job.step}` : "";
      return `${job.name}: ${job.state}${p}${loss}${job.error ? " (" + job.error + ")" : ""}`;
    }

    async function poll() {
      clearTimeout(timer);
      if (!current) return;
      let s;
      try { s = await api(`/api/lab/train/status?name=${encodeURIComponent(current)}`); } catch (e) {
        error.textContent = e.message; timer = setTimeout(poll, 2000); return;
      }
      const job = s.job, active = job && (job.state === "queued" || job.state === "training");
      stateLine.textContent = job ? describe(job) : `${current}: finished`;
      stateLine.dataset.state = job ? job.state : "done";
      bar.value = job ? (job.state === "done" ? 1 : job.fraction) : 1;
      drawCurve(s.curves);
      stopBtn.disabled = !active; startBtn.disabled = !!active;
      sampleBtn.disabled = !s.checkpoint;
      if (s.checkpoint && announced !== current) { announced = current; Lab.models(true).catch(() => {}); }  // the other tabs offer it
      if (s.checkpoint && (!active || Date.now() - lastSampleAt > 4000)) {
        if (job == null || job.step !== lastSampledStep || !active) { lastSampleAt = Date.now(); await sample(); }
      }
      if (active) timer = setTimeout(poll, 1000);
      else {
        after.textContent = s.checkpoint
          ? `“${current}” is now one of the lab's models (trained here): the other sections list it. From the command line: ` +
            `rnnlab sample RUNS/${current}, or rnnlab train --resume --out RUNS/${current} --time-budget 600 ` +
            "(RUNS: the server's runs folder, --runs-dir)"
          : "";
        Lab.models(true).catch(() => {});
      }
    }

    startBtn.addEventListener("click", async () => {
      error.textContent = ""; after.textContent = ""; sampleText.textContent = ""; sampleInfo.textContent = "";
      startBtn.disabled = true;
      try {
        const a = await api("/api/lab/train/start", {
          text: text.value, cell: cell.value, hidden_size: Number(hidden.value), num_layers: Number(layers.value),
          time_budget: Number(budget.value), name: name.value.trim() || null });
        current = a.name; lastSampledStep = null; lastSampleAt = 0;
        poll();
      } catch (e) { error.textContent = e.message; startBtn.disabled = false; }
    });
    stopBtn.addEventListener("click", async () => {
      if (!current) return;
      stopBtn.disabled = true;
      try { await api("/api/lab/train/stop", { name: current }); } catch (e) { error.textContent = e.message; }
      poll();
    });
    sampleBtn.addEventListener("click", sample);

    const now = await api("/api/lab/train/status");  // a run already going (another tab, a reload)
    drawCurve(now.curves);
    if (now.name) { current = now.name; poll(); }
  },
});

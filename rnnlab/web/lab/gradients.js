// Gradients through time. Above: |dL/dh_t| against t (log scale) for freshly initialised Elman, LSTM and GRU
// models whose recurrent weights W_hh are scaled by a gain on a slider, with clipping of the gradient's norm
// on or off (/api/lab/gradients/curves: rnnlab.gradients.gradient_report). Below: for the lab's trained
// elman, lstm and gru and a text, how strongly the prediction at position t depends on each earlier
// character, |d log p(x_t+1) / d e_s| (/api/lab/gradients/connectivity: rnnlab.gradients.connectivity),
// the text shaded side by side; hovering a character or the arrow keys move t.
"use strict";

(function () {
  const { h } = Lab;
  const CELLS = [["elman", "#d95f02"], ["lstm", "#0a64c8"], ["gru", "#1b9e77"]];
  const DEFAULT_TEXT = "def area(self):\n    return self.width * self.height\n";
  const DEBOUNCE_MS = 120;

  const STYLE = `
  .gr-table td, .gr-table th { font-variant-numeric: tabular-nums; }
  .gr-connectivity { display: grid; grid-template-columns: repeat(auto-fit, minmax(250px, 1fr)); gap: .8rem; min-width: 0; }
  .gr-panel { min-width: 0; border: 1px solid var(--line); border-radius: 6px; padding: .5rem; }
  .gr-panel:focus-visible { outline: 2px solid var(--accent); outline-offset: 1px; }
  .gr-panel h4 { margin: 0 0 .3rem; font-size: .9rem; }
  .gr-text { font-family: ui-monospace, monospace; white-space: pre-wrap; overflow-wrap: anywhere; word-break: break-all;
             line-height: 1.6; }
  .gr-char { padding: 1px 0; border-radius: 2px; cursor: default; }
  .gr-char.gr-now { outline: 2px solid #1d1d1f; }
  .gr-char.gr-next { box-shadow: inset 0 -3px 0 #e7298a; }
  .gr-char.gr-after { color: #b0b0b8; }
  .gr-key { display: flex; flex-wrap: wrap; gap: .2rem 1rem; font-size: .8rem; margin: .3rem 0; }
  .gr-key .sw { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: .3rem; }
  .gr-chart-row { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }`;

  function fmt(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "\u2014";
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : String(Number(v.toPrecision(3)));
  }

  function mount(el) {
    if (!document.getElementById("gr-style")) document.head.append(h("style", { id: "gr-style" }, STYLE));
    const panel = (title, ...body) => h("div", { class: "lab-panel" }, h("h3", {}, title), ...body);

    // --- the gain curves ---------------------------------------------------------------------------
    const gain = h("input", { type: "range", min: 0.1, max: 4, step: 0.05, value: 1, "aria-label": "Recurrent gain" });
    const gainOut = h("output", { class: "lab-mono" }, "1");
    const clip = h("input", { type: "checkbox", "aria-label": "Clip the gradient norm" });
    const clipNorm = h("input", { type: "number", min: 0.001, step: "any", value: 1, "aria-label": "Clipping threshold" });
    const loss = h("select", { "aria-label": "Loss" }, h("option", { value: "last" }, "at the last step"),
      h("option", { value: "all" }, "summed over every step"));
    const steps = h("input", { type: "number", min: 2, max: 100, value: 50, "aria-label": "Steps T" });
    const chart = h("div", { class: "gr-curves" });
    const table = h("div");
    const curveStatus = h("div", { class: "lab-status", "aria-live": "polite" });

    // --- the connectivity ------------------------------------------------------------------------
    const text = h("textarea", { rows: 3, maxlength: 200, spellcheck: "false", "aria-label": "Text for the connectivity view" }, DEFAULT_TEXT);
    const showBtn = h("button", { type: "button" }, "Show");
    const conn = h("div", { class: "gr-connectivity" });
    const connStatus = h("div", { class: "lab-status", "aria-live": "polite" });
    const scale = Lab.colorScale(0, 1, "sequential");

    el.append(
      h("p", { class: "muted" }, "The gradient that reaches the state h_t from a loss at step T is a product of T \u2212 t " +
        "Jacobians \u2202h_{s}/\u2202h_{s\u22121}: it shrinks or grows geometrically with the distance. The gain multiplies W_hh at " +
        "initialisation (gain 1: PyTorch's initialisation). Clipping rescales the whole gradient by one factor when its norm " +
        "is above the threshold: the curve moves down as a whole, its slope stays."),
      panel("|\u2202L/\u2202h_t| of fresh models (log scale, mean over a batch of random sequences)",
        h("div", { class: "lab-row" },
          h("label", {}, "Recurrent gain", h("span", { class: "lab-row", style: { margin: 0 } }, gain, gainOut)),
          h("label", { class: "inline" }, clip, "Clip the gradient norm"),
          h("label", {}, "Clipping threshold", clipNorm),
          h("label", {}, "Loss", loss), h("label", {}, "Steps T", steps)),
        curveStatus, h("div", { class: "gr-chart-row" }, h("div", { style: { flex: "1 1 520px", minWidth: 0 } }, chart), table)),
      panel("Connectivity: how strongly the prediction after position t depends on each character before it",
        h("p", { class: "muted" }, "Each character s is shaded by |\u2202 log p(x_{t+1}) / \u2202 e_s|, the gradient of the log " +
          "probability the model gives the next character with respect to the input at s, divided by its largest " +
          "value for this t. The outlined character is t (just read), the underlined one t + 1 (predicted). Hover a " +
          "character, or focus a panel and use the arrow keys (Home, End)."),
        h("div", { class: "lab-row" }, h("label", { style: { flex: "1 1 420px" } }, "Text for the connectivity view", text), showBtn),
        Lab.legend(scale, "|\u2202 log p / \u2202 e_s| \u00f7 its largest at t"), connStatus, conn));

    // --- curves: request on every change, the newest answer wins -------------------------------------
    let pending = null, timer = null;
    function settings() {
      return { gain: Number(gain.value), clip: clip.checked, clip_norm: Number(clipNorm.value) || 1,
               loss: loss.value, length: Math.min(100, Math.max(2, Math.round(Number(steps.value)) || 50)) };
    }
    function drawCurves(body, r) {
      const key = body.clip ? "clipped_norms" : "norms";
      const series = [];
      for (const [cell, color] of CELLS) {
        const e = r.cells[cell];
        const pts = (vals) => r.steps.map((t, i) => [t, vals[i]]);
        if (body.clip) series.push({ points: pts(e.norms), color, width: 1, dash: true, opacity: 0.5, attrs: { "data-raw": cell } });
        series.push({ points: pts(e[key]), color, attrs: { "data-cell": cell, "data-values": JSON.stringify(e[key]) } });
      }
      const svgEl = Lab.lineChart({ series, log: true, xLabel: "time step t", yLabel: "|\u2202L/\u2202h_t|", label: "gradient norm per step" });
      chart.replaceChildren(svgEl, h("div", { class: "gr-key" }, CELLS.map(([cell, color]) => h("span", {},
        h("span", { class: "sw", style: { background: color } }), cell)),
        body.clip ? h("span", { class: "muted" }, "dashed: before clipping") : null));
      const row = (cell) => {
        const e = r.cells[cell], sp = e.spectra[0];
        const radius = Object.entries(sp.radius).map(([g, v]) => `${g} ${fmt(v)}`).join(", ");
        return h("tr", {}, h("th", { scope: "row" }, cell), h("td", {}, radius), h("td", {}, fmt(e.grad_norm)),
          h("td", {}, fmt(e.clip_factor)), h("td", {}, fmt(e.first_over_last)));
      };
      table.replaceChildren(h("table", { class: "lab-table gr-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "cell"), h("th", {}, "\u03c1 of each block of W_hh"), h("th", {}, "|\u2207\u03b8 L| before clipping"),
          h("th", {}, "clip factor"), h("th", {}, "|\u2202L/\u2202h_1| \u00f7 |\u2202L/\u2202h_T|"))),
        h("tbody", {}, CELLS.map(([cell]) => row(cell)))));
      chart.dataset.settings = JSON.stringify(body);
      chart.dataset.clip = String(body.clip);
      chart.dataset.gain = String(body.gain);
    }
    async function requestCurves() {
      const body = settings();
      gainOut.textContent = String(body.gain);
      if (pending) pending.abort();
      const ctrl = new AbortController();
      pending = ctrl;
      try {
        const r = await Lab.api("/api/lab/gradients/curves", body, { signal: ctrl.signal });
        if (pending !== ctrl) return;
        curveStatus.textContent = "";
        drawCurves(body, r);
      } catch (e) {
        if (e.name !== "AbortError" && pending === ctrl) curveStatus.textContent = e.message;
      }
    }
    function later() { clearTimeout(timer); gainOut.textContent = gain.value; timer = setTimeout(requestCurves, DEBOUNCE_MS); }
    for (const c of [gain, clipNorm, steps]) c.addEventListener("input", later);
    for (const c of [clip, loss]) c.addEventListener("change", later);

    // --- connectivity: three panels, one position t -------------------------------------------------
    let t = null;
    const views = {};  // cell -> {panel, chars, rows, tokens}
    function paint() {
      for (const v of Object.values(views)) {
        if (!v.rows) continue;
        const n = v.rows.length;
        const tt = Math.max(0, Math.min(n - 1, t));
        const row = v.rows[tt], top = Math.max(...row) || 1;
        v.panel.dataset.t = String(tt);
        v.chars.forEach((c, s) => {
          const value = s <= tt ? row[s] : 0;
          c.dataset.value = String(value);
          c.style.background = s <= tt ? scale(value / top) : "";
          c.style.color = s <= tt && value / top > 0.6 ? "#fff" : "";
          c.classList.toggle("gr-now", s === tt);
          c.classList.toggle("gr-next", s === tt + 1);
          c.classList.toggle("gr-after", s > tt + 1);
        });
        v.note.textContent = `t = ${tt}: after ${JSON.stringify(v.tokens[tt])}, predicting ${JSON.stringify(v.tokens[tt + 1])}; ` +
          `largest ${fmt(top)} (at ${JSON.stringify(v.tokens[row.indexOf(Math.max(...row))])})`;
      }
    }
    function move(to) { t = to; paint(); }
    function view(cell, color) {
      const note = h("div", { class: "lab-status" });
      const body = h("div", { class: "gr-text" });
      const p = h("div", { class: "gr-panel", tabindex: 0, role: "group", dataset: { model: cell },
                           "aria-label": `${cell}: connectivity; arrow keys move the position` },
        h("h4", { style: { color } }, cell), body, note);
      p.addEventListener("keydown", (ev) => {
        const v = views[cell];
        if (!v || !v.rows) return;
        const n = v.rows.length, cur = Math.max(0, Math.min(n - 1, t));
        const to = { ArrowLeft: cur - 1, ArrowRight: cur + 1, ArrowUp: cur - 1, ArrowDown: cur + 1, Home: 0, End: n - 1 }[ev.key];
        if (to === undefined) return;
        ev.preventDefault();
        move(Math.max(0, Math.min(n - 1, to)));
      });
      views[cell] = { panel: p, body, note, chars: [], rows: null, tokens: [] };
      return p;
    }
    async function loadConnectivity() {
      const value = text.value;
      conn.replaceChildren(...CELLS.map(([cell, color]) => view(cell, color)));
      t = null;
      connStatus.textContent = "";
      await Promise.all(CELLS.map(async ([cell]) => {
        const v = views[cell];
        try {
          await Lab.whenReady(v.body, cell);
          const r = await Lab.api("/api/lab/gradients/connectivity", { model: cell, text: value });
          if (views[cell] !== v) return;
          v.rows = r.rows; v.tokens = r.tokens;
          v.panel.querySelector("h4").textContent = `${cell} (${r.num_layers}\u00d7${r.hidden_size})`;
          v.chars = r.tokens.map((sym, s) => h("span", { class: "gr-char", dataset: { s } }, sym === "\n" ? "\u21b5\n" : sym));
          v.chars.forEach((c, s) => c.addEventListener("mouseenter", () => move(Math.min(s, r.rows.length - 1))));
          v.body.replaceChildren(...v.chars);
          if (t === null) t = r.rows.length - 1;
          paint();
        } catch (e) { v.body.replaceChildren(h("p", { class: "lab-error" }, e.message)); }
      }));
    }
    showBtn.addEventListener("click", loadConnectivity);

    return Promise.all([requestCurves(), loadConnectivity()]);  // drawn: the curves and the three texts
  }

  Lab.register({ id: "gradients", title: "Gradients through time", mount });
})();

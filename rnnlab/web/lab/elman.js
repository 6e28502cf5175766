// The lab's Elman network, step by step: the lab model "elman" reads a text one character at a time.
// At step t: the one-hot x_t, the hidden state h_t as a strip of coloured units, the softmax y_t as bars,
// and the network unrolled over t = 1..t with the same weights on every arrow. The whole trace of the
// text comes from /api/lab/elman/steps (rnnlab.introspect.step_through); the page only walks through it.
"use strict";

(function () {
  const { h, svg } = Lab;
  const DEFAULT_TEXT = "def main():\n    return 0";
  const TOP = 8;  // bars of y_t
  const PLAY_MS = 600;
  const MAX_BITS = 256;  // cells of the one-hot strip; a larger vocabulary shares them out

  // this section's own styles (the page allows inline style sheets; lab.css holds the shared ones)
  const CSS = `
  .el-eq { font-size: 1.05rem; white-space: pre-wrap; overflow-wrap: anywhere; }
  .el-strip { display: flex; flex-wrap: wrap; gap: 1px; margin: .3rem 0; }
  .el-unit { width: 9px; height: 22px; border: 1px solid rgba(0,0,0,.08); }
  .el-bit { min-width: 6px; height: 22px; background: #f1f1f3; border: 1px solid #e0e0e5; font: 12px ui-monospace, monospace;
            display: inline-flex; align-items: center; justify-content: center; }
  .el-bit.on { background: #0a64c8; color: #fff; min-width: 22px; font-weight: 600; border-color: #0a64c8; }
  .el-read span.el-done { background: #e3eefb; }
  .el-read span.el-now { background: #0a64c8; color: #fff; }
  .el-read span.el-todo { color: #6e6e73; }
  .el-bar-row { display: grid; grid-template-columns: 3.2rem 1fr 3.6rem; align-items: center; gap: .4rem; margin: 2px 0; }
  .el-bar-row .el-sym { text-align: right; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .el-bar { display: block; height: 14px; background: #3b7dd8; border-radius: 2px; min-width: 1px; }
  .el-bar-row.el-next .el-bar { background: #1a9641; }
  .el-bar-row.el-next .el-sym { font-weight: 700; color: #1a9641; }
  .el-p { font-variant-numeric: tabular-nums; font-size: .85rem; }
  .el-unrolled { overflow-x: auto; }
  .el-unrolled rect { fill: #fff; stroke: #8e8e93; }
  .el-unrolled .el-current rect { stroke: #0a64c8; stroke-width: 2; }
  .el-unrolled rect.el-box-h, .el-unrolled rect.el-box-h0 { fill: #eef4fc; }
  .el-unrolled text.w-hh { fill: #b2182b; font-weight: 600; }
  .el-unrolled text.w-xh, .el-unrolled text.w-hy { fill: #6e6e73; }`;

  function sub(base, s) { return [base, h("sub", {}, s)]; }

  function mount(el) {
    document.head.append(h("style", {}, CSS));
    const modelSel = h("select", { "aria-label": "Model" });
    const textBox = h("textarea", { "aria-label": "Text to feed", rows: 2, maxlength: 200, spellcheck: "false" }, DEFAULT_TEXT);
    const stepBtn = h("button", { type: "button", "aria-keyshortcuts": "ArrowRight" }, "Step");
    const backBtn = h("button", { type: "button", class: "secondary", "aria-keyshortcuts": "ArrowLeft" }, "Back");
    const resetBtn = h("button", { type: "button", class: "secondary" }, "Reset");
    const playBtn = h("button", { type: "button", class: "secondary", "aria-pressed": "false" }, "Play");
    const tOut = h("output", { class: "el-t lab-mono", "aria-live": "polite" }, "t = 0");
    const status = h("div", { class: "lab-status" });
    const readText = h("div", { class: "lab-text el-read", "aria-label": "the text, the characters read so far marked" });
    const onehot = h("div", { class: "el-strip el-onehot", role: "img" });
    const onehotNote = h("div", { class: "lab-status" });
    const embedBox = h("div", { class: "el-embed-box", hidden: true });
    const hidden = h("div", { class: "el-strip el-hidden", role: "img" });
    const hiddenNote = h("div", { class: "lab-status" });
    const output = h("div", { class: "el-output" });
    const unrolled = h("div", { class: "el-unrolled" });
    const shared = h("p", { class: "muted el-shared" });
    const hScale = Lab.colorScale(-1, 1, "diverging");
    const panel = (title, ...body) => h("div", { class: "lab-panel" }, h("h3", {}, title), ...body);

    el.append(
      h("div", { class: "lab-panel el-equations" },
        h("p", {}, "An Elman network reads one character at a time (one word, for a word-level model). Its state starts at zeros; at each step it mixes the new input with its previous state, and predicts the next character from the new state:"),
        h("p", { class: "lab-mono el-eq" }, sub("h", "t"), " = tanh(", sub("W", "xh"), " ", sub("x", "t"), " + ", sub("W", "hh"), " ",
          sub("h", "t−1"), " + b),    ", sub("y", "t"), " = softmax(", sub("W", "hy"), " ", sub("h", "t"), " + c),    ", sub("h", "0"), " = 0"),
        shared),
      h("div", { class: "lab-row" },
        h("label", {}, "Model", modelSel),
        h("label", { style: { flex: "1 1 320px" } }, "Text to feed", textBox)),
      h("div", { class: "lab-row" }, stepBtn, backBtn, resetBtn, playBtn, tOut, status),
      readText,
      h("div", { class: "lab-grid" },
        panel("Input x_t: one-hot", onehot, onehotNote, embedBox),
        panel("Hidden state h_t", hidden, h("div", {}, Lab.legend(hScale, "h_t unit (tanh: −1 to 1)")), hiddenNote),
        panel("Output y_t: the next character", output)),
      panel("Unrolled in time", h("p", { class: "muted" }, "One column per step read. Every column uses the same three matrices: the arrows carry the same labels."), unrolled));

    let trace = null;  // the API's answer for traceText
    let traceText = null;
    let t = 0;  // steps taken: x_1..x_t read
    let pending = null;  // the request for the current text
    let timer = null;

    function fail(e) { status.replaceChildren(h("span", { class: "lab-error", role: "alert" }, e.message)); }

    function fetchTrace() {
      const text = textBox.value;
      status.textContent = "";
      pending = Lab.api("/api/lab/elman/steps", { model: modelSel.value || "elman", text, top: TOP }).then((d) => {
        if (textBox.value !== text) return trace;  // typed on: a later request answers
        trace = d; traceText = text; t = Math.min(t, d.tokens.length); describe(); render();
        return d;
      }).catch((e) => { fail(e); throw e; });
      pending.catch(() => {});
      return pending;
    }

    function describe() {
      const d = trace, w = d.weights, dims = (k) => w[k].join(" × ");
      shared.replaceChildren(
        `The same weights at every step: W_xh ${dims("W_xh")}, W_hh ${dims("W_hh")}, W_hy ${dims("W_hy")}` +
        (w.E ? `, and the embedding E ${dims("E")} (this model reads E x_t, so its W_xh x_t is W_ih E x_t)` : "") +
        `: ${d.parameters.toLocaleString("en-US")} parameters in all, whatever the length of the text. ` +
        `Model "${d.model}": ${d.cell}, ${d.hidden_size} units, ${d.vocab_size} symbols.`);
    }

    function strip(box, values, scale, label, title) {
      box.setAttribute("aria-label", label);
      box.replaceChildren(...values.map((v, j) => h("span", { class: "el-unit", style: { background: scale(v) },
        dataset: { value: String(v), unit: j }, title: title(v, j) })));
    }

    function render() {
      const d = trace;
      if (!d) return;
      const n = d.tokens.length;
      tOut.textContent = `t = ${t}`;
      stepBtn.disabled = t >= n; backBtn.disabled = t === 0;
      // the text, the characters read so far marked, the current one underlined
      readText.replaceChildren(...d.pieces.map((c, i) => h("span", { class: i < t ? (i === t - 1 ? "el-now" : "el-done") : "el-todo" },
        i === t - 1 && c === "\n" ? "\u21b5\n" : c)));  // a newline just read is shown
      // x_t
      const cur = t > 0 ? d.ids[t - 1] : -1;
      onehot.setAttribute("aria-label", t > 0 ? `x_${t}: the one-hot vector of ${JSON.stringify(d.tokens[t - 1])}` : "no input read yet");
      if (d.symbols.length <= MAX_BITS) {
        onehot.replaceChildren(...d.symbols.map((s, i) => h("span", { class: "el-bit" + (i === cur ? " on" : ""),
          dataset: { lit: String(i === cur), symbol: s }, title: `${JSON.stringify(s)}: ${i === cur ? 1 : 0}` }, i === cur ? Lab.visible(s) : "")));
      } else {  // a large vocabulary (words): one cell per run of ids, the run holding the 1 lit
        const per = Math.ceil(d.symbols.length / MAX_BITS), cells = Math.ceil(d.symbols.length / per);
        onehot.replaceChildren(...Array.from({ length: cells }, (_, k) => {
          const on = cur >= 0 && Math.floor(cur / per) === k;
          return h("span", { class: "el-bit" + (on ? " on" : ""), dataset: on ? { lit: "true", symbol: d.symbols[cur] } : { lit: "false" },
            title: `ids ${k * per}..${Math.min(d.symbols.length, (k + 1) * per) - 1}` + (on ? `: the 1 at ${JSON.stringify(d.symbols[cur])}` : ": all 0") },
            on ? Lab.visible(d.symbols[cur]) : "");
        }));
      }
      onehotNote.textContent = t > 0
        ? `x_${t}: a 1 at ${JSON.stringify(d.tokens[t - 1])} (id ${cur} of ${d.vocab_size}), 0 everywhere else`
        : `t = 0: nothing read yet (${d.vocab_size} symbols, one cell each)`;
      if (d.embedded) {
        embedBox.hidden = false;
        const e = t > 0 ? d.embedded[t - 1] : d.embedded[0].map(() => 0);
        const m = Math.max(1e-6, ...d.embedded.flat().map(Math.abs));
        const es = Lab.colorScale(-m, m, "diverging");
        const eStrip = h("div", { class: "el-strip el-embed", role: "img" });
        strip(eStrip, e, es, `E x_${t}: the embedding the first layer reads`, (v, j) => `E x_t[${j}] = ${v.toFixed(4)}`);
        embedBox.replaceChildren(h("div", { class: "lab-status" }, t > 0 ? `E x_${t}: its embedding, what W_ih multiplies` : "E x_t: the embedding, once a character is read"),
          eStrip, h("div", {}, Lab.legend(es, "embedding value")));
      }
      // h_t
      const hv = t > 0 ? d.hidden[t - 1] : Array(d.hidden_size).fill(0);
      strip(hidden, hv, hScale, `h_${t}: ${d.hidden_size} units`, (v, j) => `unit ${j}: ${v.toFixed(4)}`);
      hiddenNote.textContent = t > 0 ? `h_${t}, ${d.hidden_size} units` : `h_0 = 0: the state starts at zeros`;
      // y_t
      if (t === 0) {
        output.replaceChildren(h("p", { class: "muted" }, "y_0: no prediction before the first character is read."));
      } else {
        const next = t < n ? d.tokens[t] : null;
        const rows = d.top[t - 1];
        const max = rows[0].p;
        output.replaceChildren(
          h("div", { class: "el-bars", role: "img", "aria-label": `y_${t}: the ${rows.length} most probable next characters` },
            rows.map((c) => h("div", { class: "el-bar-row" + (c.symbol === next ? " el-next" : ""), dataset: { symbol: c.symbol, p: String(c.p) } },
              h("span", { class: "lab-mono el-sym" }, Lab.visible(c.symbol)),
              h("span", { class: "el-bar", style: { width: `${(100 * c.p) / Math.max(max, 1e-9)}%` } }),
              h("span", { class: "el-p" }, c.p.toFixed(3))))),
          h("p", { class: "muted" }, next === null ? "The end of the text: nothing left to compare with."
            : `The next ${d.level === "word" ? "word" : "character"} is ${JSON.stringify(next)}; the model gave it p = ${d.next_p[t - 1].toFixed(4)}` +
              ` (${(-Math.log2(d.next_p[t - 1])).toFixed(2)} bits).`));
      }
      drawUnrolled();
    }

    function drawUnrolled() {
      const d = trace, colW = 100, left = 80, H = 190;
      const W = left + Math.max(t, 1) * colW + 20;
      const s = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                             "aria-label": `the network unrolled over ${t} step(s), the same weights at every step` });
      s.append(svg("defs", {}, svg("marker", { id: "el-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#6e6e73" }))));
      const yY = 12, hY = 78, xY = 150, bw = 44, bh = 26;
      const arrow = (x1, y1, x2, y2, label, cls, lx, ly) => {
        s.append(svg("line", { x1, y1, x2, y2, stroke: "#6e6e73", "marker-end": "url(#el-arrow)" }));
        s.append(svg("text", { x: lx, y: ly, class: cls, "text-anchor": "middle" }, label));
      };
      const short = (s) => (s.length > 6 ? s.slice(0, 5) + "…" : s);  // a long word in a small box: its title has it whole
      const box = (x, y, label, cls, title) => svg("g", {}, svg("rect", { x, y, width: bw, height: bh, rx: 5, class: cls }),
        svg("text", { x: x + bw / 2, y: y + 17, "text-anchor": "middle", class: "lab-mono" }, short(label)), title ? svg("title", {}, title) : null);
      s.append(box(8, hY, "h₀=0", "el-box-h0", "the state before the first character: zeros"));  // 4 characters: not shortened
      for (let i = 1; i <= t; i++) {
        const x = left + (i - 1) * colW + 8, g = svg("g", { class: "el-col" + (i === t ? " el-current" : ""), "data-t": i });
        const prevX = i === 1 ? 8 : x - colW;
        g.append(box(x, xY, Lab.visible(d.tokens[i - 1]), "el-box-x", `x_${i} = one-hot(${JSON.stringify(d.tokens[i - 1])})`),
                 box(x, hY, `h${i}`, "el-box-h", `h_${i}`),
                 box(x, yY, Lab.visible(d.top[i - 1][0].symbol), "el-box-y", `y_${i}: most probable next ${JSON.stringify(d.top[i - 1][0].symbol)} (p = ${d.top[i - 1][0].p.toFixed(3)})`));
        s.append(g);
        arrow(x + bw / 2, xY, x + bw / 2, hY + bh + 1, "W_xh", "w-xh", x + bw / 2 + 20, xY - 14);
        arrow(x + bw / 2, hY, x + bw / 2, yY + bh + 1, "W_hy", "w-hy", x + bw / 2 + 20, hY - 14);
        arrow(prevX + bw, hY + bh / 2, x - 1, hY + bh / 2, "W_hh", "w-hh", (prevX + bw + x) / 2, hY + bh / 2 - 5);
      }
      s.append(svg("text", { x: 8, y: yY + 17, class: "muted" }, "y"), svg("text", { x: 8, y: xY + 17, class: "muted" }, "x"));
      unrolled.replaceChildren(s);
      unrolled.scrollLeft = unrolled.scrollWidth;  // the newest step in view
    }

    async function go(to) {
      try {
        const d = trace && traceText === textBox.value ? trace : await (pending || fetchTrace());
        t = Math.max(0, Math.min(typeof to === "function" ? to(t) : to, d.tokens.length));
        render();
      } catch (_) { /* the error is shown */ }
    }
    function stop() { if (timer) clearInterval(timer); timer = null; playBtn.textContent = "Play"; playBtn.setAttribute("aria-pressed", "false"); }

    stepBtn.addEventListener("click", () => go((x) => x + 1));
    backBtn.addEventListener("click", () => { stop(); go((x) => x - 1); });
    resetBtn.addEventListener("click", () => { stop(); go(0); });
    playBtn.addEventListener("click", () => {
      if (timer) return stop();
      playBtn.textContent = "Pause"; playBtn.setAttribute("aria-pressed", "true");
      if (trace && t >= trace.tokens.length) t = 0;
      timer = setInterval(() => {
        if (!trace || t >= trace.tokens.length) return stop();
        go((x) => x + 1);
      }, PLAY_MS);
    });
    el.addEventListener("keydown", (ev) => {
      if (ev.target === textBox || ev.target === modelSel) return;
      if (ev.key === "ArrowRight") { ev.preventDefault(); go((x) => x + 1); } else if (ev.key === "ArrowLeft") { ev.preventDefault(); go((x) => x - 1); }
    });
    let typing = null;
    textBox.addEventListener("input", () => {
      stop(); t = 0; render();
      clearTimeout(typing);
      pending = null;
      typing = setTimeout(() => { if (!pending) fetchTrace(); }, 250);
    });
    modelSel.addEventListener("change", () => {
      stop(); t = 0; trace = null; traceText = null;
      pending = Lab.whenReady(status, modelSel.value).then(() => fetchTrace());  // a lab model trains first
      pending.catch(fail);
    });

    const elmansOf = (all) => all.filter((m) => m.kind === "language-model" && ["elman", "elman-relu"].includes(m.cell));
    Lab.onModels((all) => { const e = elmansOf(all); if (e.length) Lab.setOptions(modelSel, e.map((m) => [m.name, m.name])); });
    return Lab.models().then((all) => {
      const elmans = elmansOf(all);
      modelSel.replaceChildren(...(elmans.length ? elmans : [{ name: "elman" }]).map((m) => h("option", { value: m.name }, m.name)));
      // the lab's own model, unless it is not trained yet and another Elman model is at hand
      const ready = elmans.find((m) => m.name === "elman" && m.ready) || elmans.find((m) => m.ready);
      modelSel.value = ready ? ready.name : "elman";
      return Lab.whenReady(status, modelSel.value || "elman");
    }).then(() => fetchTrace());
  }

  Lab.register({ id: "elman", title: "Elman step by step", mount });
})();

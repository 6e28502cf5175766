// The lab's sequence classification section: the class probabilities after every prefix of an input (the
// many-to-one state read at each step), and the classifier's confusion matrix on its validation or test split.
// The lab's digits classifier reads a drawing on an 8x8 grid of 17 grey levels, a row a step; a text classifier
// given on the command line reads a text box. Every number comes from /api/lab/classify/*
// (rnnlab.classify.prefix_proba, and evaluate_classifier: what `rnnlab classify eval` prints).
"use strict";

(function () {
  const { h } = Lab;
  const STYLE = `
    .cls-grid { display: inline-grid; gap: 2px; padding: 4px; background: var(--line); border-radius: 4px; user-select: none;
                touch-action: none; }
    .cls-grid button { width: 30px; height: 30px; padding: 0; border: 0; border-radius: 2px; color: transparent;
                       font-size: 10px; cursor: crosshair; }
    .cls-grid button:focus-visible { outline: 2px solid #e8590c; outline-offset: 0; color: #e8590c; }
    .cls-grid button.reading { box-shadow: inset 0 0 0 2px #e8590c; }
    table.cls-heat td.p, table.cls-confusion td.n { min-width: 2.6rem; font-variant-numeric: tabular-nums; }
    table.cls-heat td.best { outline: 2px solid #e8590c; outline-offset: -2px; font-weight: 600; }
    table.cls-heat th.step { text-align: left; font-family: ui-monospace, monospace; white-space: pre; }
    table.cls-confusion td.diag { font-weight: 600; }
    .cls-howto { font-family: ui-monospace, monospace; white-space: pre-wrap; overflow-wrap: anywhere; background: #f4f4f6;
                 padding: .5rem; border-radius: 6px; }
    .cls-input { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }`;
  const fmt = (p) => (p >= 0.995 ? "1.00" : p.toFixed(2));
  const clampInt = (v, lo, hi, d) => { const x = Math.floor(Number(v)); return Number.isFinite(x) ? Math.min(hi, Math.max(lo, x)) : d; };

  /** The probabilities after every prefix as a heat map: a row per prefix, a column per class, the most probable
   *  class of each row outlined. */
  function heat(d, reads) {
    const scale = Lab.colorScale(0, 1, "sequential");
    const table = h("table", { class: "lab-table cls-heat", "aria-label": "class probabilities after every prefix: a row per prefix, a column per class" },
      h("thead", {}, h("tr", {}, h("th", {}, reads === "text" ? "prefix ends in" : "read so far"), d.classes.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, d.probs.map((row, t) => {
        const best = row.indexOf(Math.max(...row));
        return h("tr", { dataset: { step: t } },
          h("th", { class: "step", scope: "row", title: reads === "text" ? JSON.stringify(d.steps.slice(0, t + 1).join("")) : `rows 1 to ${t + 1}` },
            reads === "text" ? `${t + 1}: ${Lab.visible(d.steps[t])}` : t ? `rows 1–${t + 1}` : "row 1"),
          row.map((p, c) => h("td", { class: "p" + (c === best ? " best" : ""), dataset: { step: t, class: d.classes[c], p },
                                      style: { background: scale(p), color: p > 0.6 ? "#fff" : "" },
                                      title: `after ${reads === "text" ? "prefix" : "rows 1 to"} ${t + 1}: P(${d.classes[c]}) = ${p.toFixed(4)}` }, fmt(p))));
      })));
    return h("div", {}, table, h("div", { class: "lab-row" }, Lab.legend(scale, "probability"),
      h("span", { class: "muted" }, "outlined: the most probable class after that prefix")));
  }

  function confusion(d) {
    const totals = d.confusion.map((r) => r.reduce((a, b) => a + b, 0));
    const scale = Lab.colorScale(0, 1, "heat");
    const table = h("table", { class: "lab-table cls-confusion", "aria-label": `confusion matrix on the ${d.split} split: rows true classes, columns predicted` },
      h("thead", {}, h("tr", {}, h("th", {}, "true \\ predicted"), d.classes.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, d.confusion.map((row, i) => h("tr", {}, h("th", { scope: "row" }, d.classes[i]),
        row.map((n, j) => {
          const f = totals[i] ? n / totals[i] : 0;
          return h("td", { class: "n" + (i === j ? " diag" : ""), dataset: { count: n, true: d.classes[i], predicted: d.classes[j] },
                           style: { background: n ? scale(f) : "", color: f > 0.6 ? "#fff" : "" },
                           title: `${n} of ${totals[i]} “${d.classes[i]}” predicted “${d.classes[j]}” (${(100 * f).toFixed(1)}%)` }, String(n));
        })))));
    return h("div", {}, h("p", { class: "cls-scores", dataset: { acc: d.acc } },
      `${d.examples} examples: accuracy ${(100 * d.acc).toFixed(2)}%, balanced accuracy ${(100 * d.balanced_acc).toFixed(2)}%, ` +
      `macro F1 ${d.macro_f1.toFixed(4)}, loss ${d.loss.toFixed(4)} nats per sequence`),
      table, h("div", { class: "lab-row" }, Lab.legend(scale, "share of the true class's examples")),
      h("div", { class: "lab-mono muted" }, "$ " + d.command));
  }

  /** The drawing: rows x cols cells of 0..levels-1, painted by click or drag with the brush level, or from the
   *  keyboard (arrows move, Space or Enter paints, + and - change a cell, Delete clears it). */
  function drawing(rows, cols, levels, onChange) {
    const max = levels - 1, values = Array.from({ length: rows }, () => new Array(cols).fill(0));
    const scale = Lab.colorScale(0, max, "sequential");
    const brush = h("input", { type: "range", min: 0, max, step: 1, value: max, "aria-label": "Brush level" });
    const brushOut = h("output", { class: "lab-mono", "aria-hidden": "true" }, String(max));
    const grid = h("div", { class: "cls-grid", role: "grid", "aria-label": `drawing: ${rows} rows of ${cols} pixels, levels 0 to ${max}`,
                            style: { gridTemplateColumns: `repeat(${cols}, 30px)` } });
    const cells = [];
    let painting = false;
    const set = (r, c, v) => {
      values[r][c] = Math.min(max, Math.max(0, v));
      const b = cells[r][c];
      b.style.background = scale(values[r][c]);
      b.textContent = String(values[r][c]);
      b.setAttribute("aria-label", `row ${r + 1}, column ${c + 1}: level ${values[r][c]}`);
    };
    for (let r = 0; r < rows; r++) {
      const line = [];
      for (let c = 0; c < cols; c++) {
        const b = h("button", { type: "button", role: "gridcell", tabindex: r === 0 && c === 0 ? 0 : -1, dataset: { row: r, col: c } });
        b.addEventListener("pointerdown", (ev) => { ev.preventDefault(); painting = true; set(r, c, Number(brush.value)); b.focus(); });
        b.addEventListener("pointerenter", () => { if (painting) set(r, c, Number(brush.value)); });
        b.addEventListener("keydown", (ev) => {
          const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
          if (moves[ev.key]) {
            const nr = Math.min(rows - 1, Math.max(0, r + moves[ev.key][0])), nc = Math.min(cols - 1, Math.max(0, c + moves[ev.key][1]));
            b.tabIndex = -1; cells[nr][nc].tabIndex = 0; cells[nr][nc].focus(); ev.preventDefault(); return;
          }
          let v = null;
          if (ev.key === " " || ev.key === "Enter") v = Number(brush.value);
          else if (ev.key === "+" || ev.key === "=") v = values[r][c] + 1;
          else if (ev.key === "-") v = values[r][c] - 1;
          else if (ev.key === "Delete" || ev.key === "Backspace") v = 0;
          if (v === null) return;
          ev.preventDefault(); set(r, c, v); onChange();
        });
        line.push(b); grid.append(b);
      }
      cells.push(line);
    }
    const stop = () => { if (painting) { painting = false; onChange(); } };
    window.addEventListener("pointerup", stop);
    grid.addEventListener("pointerleave", stop);
    brush.addEventListener("input", () => { brushOut.textContent = brush.value; });
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) set(r, c, 0);
    return {
      el: h("div", {}, grid, h("div", { class: "lab-row", style: { marginTop: ".4rem" } },
        h("label", {}, "Brush level", h("span", { class: "lab-row", style: { margin: 0 } }, brush, brushOut)),
        Lab.legend(scale, "pixel level"))),
      vectors: () => values.map((row) => row.map((v) => v / max)),
      load(vectors) { vectors.forEach((row, r) => row.forEach((v, c) => set(r, c, Math.round(v * max)))); },
      clear() { for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) set(r, c, 0); },
      mark(t) { cells.forEach((line, r) => line.forEach((b) => b.classList.toggle("reading", r === t))); },
    };
  }

  function mount(el) {
    if (!document.getElementById("cls-style")) document.head.append(h("style", { id: "cls-style" }, STYLE));
    const sel = h("select", { "aria-label": "Classifier" });
    const split = h("select", { "aria-label": "Split" }, h("option", { value: "test" }, "test"), h("option", { value: "val" }, "validation"));
    const inputBox = h("div", { class: "cls-input" });
    const heatBox = h("div", { class: "cls-heat-box", dataset: { ready: "false" } });
    const confBox = h("div", { class: "cls-confusion-box", dataset: { ready: "false" } });
    const howBox = h("div", {});
    const status = h("div", { class: "lab-status", "aria-live": "polite" });
    const panel = (title, note, ...body) => h("div", { class: "lab-panel" }, h("h3", {}, title), note ? h("p", { class: "muted" }, note) : null, ...body);
    el.append(
      h("p", {}, "A many-to-one network reads a whole sequence and classifies what its states hold at the end: here three members, which read the state after the last element, the mean of the states, or both, and average their probabilities. Reading them after every step shows how the decision forms as the sequence comes in."),
      h("div", { class: "lab-row" }, h("label", {}, "Classifier", sel), status),
      panel("The input, and the class probabilities after every prefix", null, h("div", { class: "lab-grid" }, inputBox, heatBox)),
      panel("Confusion matrix", "The checkpoint on its own data's split (the examples it never trained on): rows are the true classes, columns the predicted ones.",
        h("div", { class: "lab-row" }, h("label", {}, "Split", split)), confBox),
      howBox);

    let info = {}, current = null, gen = 0, confGen = 0, timer = null, exampleIndex = 0;
    const fail = (box, e) => { box.replaceChildren(h("p", { class: "lab-error", role: "alert" }, e.message)); box.dataset.ready = "true"; };

    async function prefixes() {
      const mine = ++gen;
      heatBox.dataset.ready = "false";
      const c = info.byName[sel.value];
      const body = c.reads === "text" ? { model: c.name, text: current.text() } : { model: c.name, vectors: current.vectors() };
      if (c.reads === "text" && !body.text.trim()) { heatBox.replaceChildren(h("p", { class: "muted" }, "Type a sequence.")); heatBox.dataset.ready = "true"; return; }
      try {
        const d = await Lab.api("/api/lab/classify/prefixes", body);
        if (mine !== gen) return;
        const last = d.probs[d.probs.length - 1], best = last.indexOf(Math.max(...last));
        const map = heat(d, c.reads);
        if (c.reads !== "text") {
          map.querySelectorAll("tbody tr").forEach((tr) => {
            tr.addEventListener("mouseenter", () => current.mark(Number(tr.dataset.step)));
            tr.addEventListener("mouseleave", () => current.mark(-1));
          });
        }
        heatBox.replaceChildren(h("p", { class: "cls-final" }, `After all ${d.steps.length} ${c.reads === "text" ? "tokens" : "rows"}: `,
          h("strong", {}, d.classes[best]), ` (p ${last[best].toFixed(3)})`), map);
        heatBox.dataset.ready = "true";
      } catch (e) { if (mine === gen) fail(heatBox, e); }
    }
    const soon = () => { status.textContent = ""; clearTimeout(timer); timer = setTimeout(prefixes, 150); };

    async function matrix() {
      const mine = ++confGen;
      confBox.dataset.ready = "false";
      confBox.replaceChildren(h("p", { class: "muted" }, "scoring the split…"));
      try {
        const d = await Lab.api("/api/lab/classify/confusion", { model: sel.value, split: split.value });
        if (mine !== confGen) return;
        confBox.replaceChildren(confusion(d)); confBox.dataset.ready = "true";
      } catch (e) { if (mine === confGen) fail(confBox, e); }
    }

    async function example() {
      const c = info.byName[sel.value];
      const d = await Lab.api("/api/lab/classify/example", { model: c.name, split: split.value, index: exampleIndex++ });
      current.load(d);
      status.textContent = `example ${d.index + 1} of the ${d.count} in the ${d.split === "val" ? "validation" : "test"} split: its class is “${d.label}”`;
      await prefixes();
    }

    function showInput() {
      const c = info.byName[sel.value];
      exampleIndex = 0; status.textContent = "";
      const exampleBtn = h("button", { type: "button", class: "secondary", onclick: () => example().catch((e) => fail(heatBox, e)) }, "Next example from the split");
      if (c.reads === "text") {
        const box = h("textarea", { "aria-label": "Sequence", rows: 2, spellcheck: "false", maxlength: 500 });
        box.addEventListener("input", soon);
        current = { text: () => box.value, load: (d) => { box.value = d.text; } };
        inputBox.replaceChildren(h("div", { style: { flex: "1 1 260px" } }, h("label", { style: { width: "100%" } }, "Sequence", box),
          h("div", { class: "lab-row", style: { marginTop: ".4rem" } }, exampleBtn)));
        return example();
      }
      const levels = info.grey_levels, rows = 8, cols = c.feature_size;
      const d = drawing(rows, cols, levels, soon);
      current = { vectors: d.vectors, load: (x) => d.load(x.vectors), mark: d.mark };
      inputBox.replaceChildren(h("div", {},
        h("p", { class: "muted" }, `Paint a digit (click or drag; arrows, Space, + and − on the keyboard). The classifier reads it row by row, top to bottom: ${rows} steps of ${cols} pixels.`),
        d.el, h("div", { class: "lab-row", style: { marginTop: ".4rem" } }, exampleBtn,
          h("button", { type: "button", class: "secondary", onclick: () => { d.clear(); status.textContent = ""; prefixes(); } }, "Clear"))));
      return example();
    }

    function howTo() {
      if (info.text_classifier) { howBox.replaceChildren(); return; }
      howBox.replaceChildren(panel("A text classifier",
        "This server has no text classifier: only the lab's digits. Train one on your own texts (a folder with one <label>.txt file per class, one example a line, as the PyTorch names tutorial's data) and serve it beside the lab; it then appears in the list above with a text box.",
        h("div", { class: "cls-howto" }, info.how_to.join("\n"))));
    }

    async function choose() {
      await Lab.whenReady(heatBox, sel.value);
      await Promise.all([showInput(), matrix()]);
    }
    sel.addEventListener("change", () => choose().catch((e) => fail(heatBox, e)));
    split.addEventListener("change", () => { exampleIndex = 0; matrix(); });

    async function load() {
      let d = await Lab.api("/api/lab/classify/classifiers");
      const lab = d.classifiers.find((c) => c.name === "digits");
      if (lab && !lab.ready) {  // the lab trains its digits classifier on first use
        await Lab.whenReady(heatBox, "digits");
        d = await Lab.api("/api/lab/classify/classifiers");
      }
      info = { ...d, byName: Object.fromEntries(d.classifiers.map((c) => [c.name, c])) };
      const usable = d.classifiers.filter((c) => c.ready);
      sel.replaceChildren(...usable.map((c) => h("option", { value: c.name },
        `${c.name}: ${c.reads === "text" ? "text" : "drawing"}, ${c.classes.length} classes (${c.source})`)));
      howTo();
      if (!usable.length) { heatBox.replaceChildren(h("p", { class: "muted" }, "No classifier is ready.")); return; }
      sel.value = usable.some((c) => c.name === "digits") ? "digits" : usable[0].name;
      await choose();
    }
    return load();
  }

  Lab.register({ id: "classify", title: "Classification", mount });
})();

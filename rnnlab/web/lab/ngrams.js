// The lab's statistical language models: a text's unigram histogram, bigram heat map, pairs (order and
// dependence), the |V|^n table against the n-grams seen, and samples of n-gram models of order 1..8.
// Every number comes from /api/lab/ngrams/* (rnnlab.ngram, the functions `rnnlab ngram stats` and
// `rnnlab ngram sample` call).
"use strict";

(function () {
  const { h, svg } = Lab;
  const SAMPLE_LENGTH = { char: 200, word: 40 };
  const fmtInt = (n) => Number(n).toLocaleString("en-US");
  const fmtP = (p) => (p === 0 ? "0" : p < 1e-3 ? p.toExponential(2) : p.toFixed(4));
  const log10 = Math.log10;
  const short = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);  // a label in a chart (its title has it whole)

  /** A chart's frame: an SVG of w x h with margins, and x/y maps from data to pixels. */
  function frame(w, hgt, m) {
    return { el: svg("svg", { width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: "img" }), w, h: hgt, m,
             iw: w - m.l - m.r, ih: hgt - m.t - m.b };
  }

  function histogram(data) {
    const u = data.unigrams, n = u.symbols.length + (u.rest ? 1 : 0);
    const rowH = 16, f = frame(520, n * rowH + 30, { l: 90, r: 70, t: 6, b: 24 });
    const max = Math.max(...u.counts, u.rest || 0, 1);
    const x = (c) => f.m.l + (c / max) * f.iw;
    f.el.setAttribute("aria-label", `unigram histogram: ${u.symbols.length} most frequent ${data.level === "word" ? "words" : "characters"} and the rest`);
    const row = (i, label, count, title, extra) => {
      const y = f.m.t + i * rowH;
      f.el.append(
        svg("text", { x: f.m.l - 6, y: y + rowH - 4, "text-anchor": "end", class: "lab-mono" }, label),
        svg("rect", { x: f.m.l, y: y + 2, width: Math.max(1, x(count) - f.m.l), height: rowH - 4,
                      fill: extra ? "#b9c3cf" : "#3b7dd8", ...(extra || {}) }, svg("title", {}, title)),
        svg("text", { x: x(count) + 4, y: y + rowH - 4, class: "muted" }, fmtP(count / u.total)));
    };
    u.symbols.forEach((s, i) => row(i, short(Lab.visible(s), 12), u.counts[i], `${JSON.stringify(s)}: ${fmtInt(u.counts[i])} of ${fmtInt(u.total)}`,
                                    null));
    // each bar carries its symbol and count (data-*) for anyone reading the page's numbers
    const rects = f.el.querySelectorAll("rect");
    rects.forEach((r, i) => { r.dataset.symbol = u.symbols[i]; r.dataset.count = u.counts[i]; });
    if (u.rest) row(u.symbols.length, `${fmtInt(u.rest_symbols)} more`, u.rest, `the other ${fmtInt(u.rest_symbols)} symbols: ${fmtInt(u.rest)} in all`, { "data-rest": u.rest });
    f.el.append(svg("text", { x: f.m.l, y: f.h - 6, class: "muted" }, `bars: count; numbers: P(symbol) over ${fmtInt(u.total)} ${data.level === "word" ? "words" : "characters"}`));
    return f.el;
  }

  function heatmap(data) {
    const b = data.bigrams, k = b.symbols.length, cell = Math.max(12, Math.min(22, Math.floor(440 / k)));
    const f = frame(70 + k * cell + 10, 40 + k * cell + 10, { l: 70, r: 10, t: 40, b: 10 });
    let max = 0;
    for (const r of b.counts) for (const c of r) max = Math.max(max, c);
    const scale = Lab.colorScale(0, log10(Math.max(max, 1)), "heat");
    f.el.setAttribute("aria-label", `bigram table of the ${k} most frequent symbols: row a, column b, colour log10 of the count of a followed by b`);
    b.symbols.forEach((s, i) => {
      f.el.append(svg("text", { x: f.m.l - 4, y: f.m.t + i * cell + cell * 0.7, "text-anchor": "end", class: "lab-mono" }, short(Lab.visible(s), 10)));
      f.el.append(svg("text", { x: f.m.l + i * cell + cell / 2, y: f.m.t - 6, "text-anchor": "start", class: "lab-mono",
                                transform: `rotate(-60 ${f.m.l + i * cell + cell / 2} ${f.m.t - 6})` }, short(Lab.visible(s), 10)));
    });
    b.counts.forEach((r, i) => r.forEach((c, j) => {
      f.el.append(svg("rect", { x: f.m.l + j * cell, y: f.m.t + i * cell, width: cell - 1, height: cell - 1,
                                fill: c ? scale(log10(c)) : "#f1f1f3", "data-count": c },
        svg("title", {}, `${JSON.stringify(b.symbols[i])} then ${JSON.stringify(b.symbols[j])}: ${fmtInt(c)} (P(a, b) = ${fmtP(c / b.pairs)})`)));
    }));
    return h("div", {}, f.el, h("div", {}, Lab.legend(scale, "log10 count of a b (grey: never)")),
      h("p", { class: "muted" }, "Row a is the first symbol, column b the next. The table is not symmetric: order matters."));
  }

  /** A log-log scatter plot of ys against xs, the diagonal y = x drawn; zeros sit on the floor, in grey. */
  function scatter(xs, ys, names, xLabel, yLabel, aria) {
    const f = frame(340, 320, { l: 52, r: 12, t: 10, b: 42 });
    const pos = [...xs, ...ys].filter((v) => v > 0);
    const lo = Math.floor(log10(Math.min(...pos)) - 0.3), hi = Math.ceil(log10(Math.max(...pos)));
    const px = (v) => f.m.l + ((Math.max(log10(v > 0 ? v : 10 ** lo), lo) - lo) / (hi - lo)) * f.iw;
    const py = (v) => f.m.t + f.ih - ((Math.max(log10(v > 0 ? v : 10 ** lo), lo) - lo) / (hi - lo)) * f.ih;
    f.el.setAttribute("aria-label", aria);
    f.el.append(svg("rect", { x: f.m.l, y: f.m.t, width: f.iw, height: f.ih, class: "axis" }),
      svg("line", { x1: px(10 ** lo), y1: py(10 ** lo), x2: px(10 ** hi), y2: py(10 ** hi), stroke: "#999", "stroke-dasharray": "4 3" }));
    for (let e = lo; e <= hi; e++) {
      f.el.append(svg("text", { x: px(10 ** e), y: f.m.t + f.ih + 14, "text-anchor": "middle", class: "muted" }, `1e${e}`),
                  svg("text", { x: f.m.l - 4, y: py(10 ** e) + 4, "text-anchor": "end", class: "muted" }, `1e${e}`));
    }
    f.el.append(svg("text", { x: f.m.l + f.iw / 2, y: f.h - 6, "text-anchor": "middle" }, xLabel),
                svg("text", { x: 12, y: f.m.t + f.ih / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${f.m.t + f.ih / 2})` }, yLabel));
    xs.forEach((x, i) => {
      const zero = !(ys[i] > 0);
      f.el.append(svg("circle", { cx: px(x), cy: py(ys[i]), r: 2.4, fill: zero ? "#9aa0a6" : "#3b7dd8", "fill-opacity": 0.6 },
        svg("title", {}, `${names[i]}: ${fmtP(x)} against ${fmtP(ys[i])}`)));
    });
    return f.el;
  }

  function pairTable(rows, cols, level) {
    const sep = level === "word" ? " " : "";
    return h("table", { class: "lab-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "a b"), cols.map(([, label]) => h("th", {}, label)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, h("td", { class: "lab-mono" }, Lab.visible(r.a) + sep + Lab.visible(r.b)),
        cols.map(([key]) => h("td", {}, key === "pmi" ? (r.pmi == null ? "−∞" : r.pmi.toFixed(2)) : fmtP(r[key])))))));
  }

  function pairs(data) {
    const p = data.pairs, pts = p.points, names = pts.a.map((a, i) => JSON.stringify(a) + " " + JSON.stringify(pts.b[i]));
    return h("div", { class: "lab-grid" },
      h("div", {},
        h("h4", {}, "Order: P(a, b) against P(b, a)"),
        scatter(pts.p_ab, pts.p_ba, names, "P(a, b)", "P(b, a)",
                `scatter of P(a, b) against P(b, a) for the ${pts.a.length} most frequent pairs`),
        h("p", { class: "muted" }, "On the dashed line a pair is as likely either way round; grey points never occur reversed."),
        pairTable(p.asymmetric, [["p_ab", "P(a, b)"], ["p_ba", "P(b, a)"]], data.level)),
      h("div", {},
        h("h4", {}, "Dependence: P(a, b) against P(a) P(b)"),
        scatter(pts.p_a_p_b, pts.p_ab, names, "P(a) P(b)", "P(a, b)",
                `scatter of P(a, b) against P(a) times P(b) for the ${pts.a.length} most frequent pairs`),
        h("p", { class: "muted" }, "On the dashed line a and b would be independent. The largest departures (PMI in bits):"),
        pairTable(p.dependent, [["p_ab", "P(a, b)"], ["p_a_p_b", "P(a) P(b)"], ["pmi", "PMI"]], data.level)));
  }

  function table(data) {
    const rows = data.rows;
    const f = frame(360, 220, { l: 48, r: 12, t: 10, b: 36 });
    const hi = Math.ceil(Math.max(...rows.map((r) => r.log10_possible))), n = rows.length;
    const x = (i) => f.m.l + (n > 1 ? (i / (n - 1)) * f.iw : f.iw / 2), y = (v) => f.m.t + f.ih - (v / Math.max(hi, 1)) * f.ih;
    f.el.setAttribute("aria-label", "log10 of the possible and the observed n-grams against n");
    f.el.append(svg("rect", { x: f.m.l, y: f.m.t, width: f.iw, height: f.ih, class: "axis" }));
    for (let e = 0; e <= hi; e += Math.max(1, Math.ceil(hi / 6))) f.el.append(svg("text", { x: f.m.l - 4, y: y(e) + 4, "text-anchor": "end", class: "muted" }, `1e${e}`));
    rows.forEach((r, i) => f.el.append(svg("text", { x: x(i), y: f.m.t + f.ih + 14, "text-anchor": "middle", class: "muted" }, String(r.n))));
    const line = (vals, colour, label) => {
      f.el.append(svg("polyline", { points: vals.map((v, i) => `${x(i)},${y(v)}`).join(" "), fill: "none", stroke: colour, "stroke-width": 2 }));
      vals.forEach((v, i) => f.el.append(svg("circle", { cx: x(i), cy: y(v), r: 3, fill: colour })));
      f.el.append(svg("text", { x: x(n - 1) - 4, y: y(vals[n - 1]) - 6, "text-anchor": "end", fill: colour }, label));
    };
    line(rows.map((r) => r.log10_possible), "#b2182b", "|V|^n possible");
    line(rows.map((r) => log10(Math.max(r.observed, 1))), "#2166ac", "seen");
    f.el.append(svg("text", { x: f.m.l + f.iw / 2, y: f.h - 4, "text-anchor": "middle" }, "n"));
    return h("div", { class: "lab-grid" },
      h("table", { class: "lab-table ng-table" },
        h("thead", {}, h("tr", {}, ["n", "|V|^n possible", "seen", "fraction seen", "seen once"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, String(r.n)), h("td", { class: "possible" }, Number(r.possible) < 1e15 ? fmtInt(r.possible) : Number(r.possible).toExponential(2)),
          h("td", { class: "observed" }, fmtInt(r.observed)), h("td", {}, r.fraction.toExponential(2)), h("td", {}, fmtInt(r.singletons)))))),
      f.el);
  }

  function mount(el) {
    const textSel = h("select", { "aria-label": "Text" });
    const levelSel = h("select", { "aria-label": "Level" }, h("option", { value: "char" }, "characters"), h("option", { value: "word" }, "words"));
    const status = h("div", { class: "lab-status", "aria-live": "polite" });
    const parts = {
      unigrams: h("div", { class: "ng-unigrams" }), bigrams: h("div", { class: "ng-bigrams" }),
      pairs: h("div", { class: "ng-scatter" }), table: h("div", { class: "ng-table-box" }),
    };
    const order = h("input", { type: "range", min: 1, max: 8, value: 3, step: 1, "aria-label": "Order n" });
    const orderOut = h("output", { class: "lab-mono", "aria-hidden": "true" }, "3");
    const seed = h("input", { type: "number", min: 0, value: 1, step: 1, "aria-label": "Seed" });
    const temp = h("input", { type: "number", min: 0.05, max: 10, value: 1, step: 0.05, "aria-label": "Temperature" });
    const smoothing = h("select", { "aria-label": "Smoothing" }, [["kneser-ney", "Kneser-Ney"], ["witten-bell", "Witten-Bell"],
      ["add-k", "add-one"], ["mle", "none (maximum likelihood)"]].map(([v, t]) => h("option", { value: v }, t)));
    const sampleBtn = h("button", { type: "button" }, "Sample");
    const sampleText = h("div", { class: "lab-text ng-sample-text", "aria-live": "polite" });
    const sampleNote = h("div", { class: "lab-status" });
    const sampleBox = h("div", { class: "ng-sample" }, sampleText, sampleNote);
    const panel = (title, body, note) => h("div", { class: "lab-panel" }, h("h3", {}, title), note ? h("p", { class: "muted" }, note) : null, body);

    el.append(
      h("p", {}, "A statistical language model counts. These are the counts of a text: how often each symbol occurs, how often one follows another, and how few of all possible n-grams a text ever shows. The n-gram models below are fitted on the same counts."),
      h("div", { class: "lab-row" },
        h("label", {}, "Text", textSel), h("label", {}, "Level", levelSel), status),
      h("div", { class: "lab-grid" },
        panel("Unigram histogram", parts.unigrams),
        panel("Bigram table", parts.bigrams)),
      panel("Pairs: order and dependence", parts.pairs),
      panel("Possible against seen n-grams", parts.table, "|V|^n grows exponentially with n; the n-grams a text holds cannot outgrow its length. Most long n-grams are seen once: counting alone cannot generalise."),
      panel("Samples of n-gram models", h("div", {},
        h("div", { class: "lab-row" },
          h("label", {}, "Order n", order), orderOut, h("label", {}, "Smoothing", smoothing),
          h("label", {}, "Temperature", temp), h("label", {}, "Seed", seed), sampleBtn),
        sampleBox), "An order-n model reads the n − 1 symbols before. Order 1 knows only frequencies; high orders copy the text."));

    let gen = 0, sampleGen = 0;  // the latest request of each kind: an older answer is dropped
    const mark = (box, ready) => { box.dataset.ready = String(ready); };
    const body = () => ({ text: textSel.value, level: levelSel.value });
    const fail = (box, e) => { box.replaceChildren(h("p", { class: "lab-error", role: "alert" }, e.message)); mark(box, true); };

    function describe(d) {
      const what = d.level === "word" ? "words" : "characters";
      status.textContent = `${fmtInt(d.tokens)} ${what}, |V| = ${fmtInt(d.vocab_size)}; ` + (d.prefix
        ? `counted on the first ${fmtInt(d.counted_chars)} of the ${fmtInt(d.train_chars)} characters of its training split (counted once, then kept)`
        : `its whole training split (the first 90%, as rnnlab ngram stats reads it)`);
    }

    async function sample() {
      const mine = ++sampleGen;
      mark(sampleBox, false);
      sampleNote.textContent = "sampling…";
      try {
        const d = await Lab.api("/api/lab/ngrams/sample", { ...body(), order: Number(order.value), smoothing: smoothing.value,
          seed: Math.max(0, Math.floor(Number(seed.value) || 0)), temperature: Number(temp.value) || 1, length: SAMPLE_LENGTH[levelSel.value] });
        if (mine !== sampleGen) return;
        sampleText.textContent = d.sample;
        sampleNote.textContent = `order ${d.order}, ${d.smoothing}, temperature ${d.temperature}, seed ${d.seed}: ${d.length} ${d.level === "word" ? "words" : "characters"} (the same as rnnlab ngram sample with --seed ${d.seed})`;
        mark(sampleBox, true);
      } catch (e) {
        if (mine !== sampleGen) return;
        sampleText.textContent = ""; sampleNote.textContent = ""; fail(sampleNote, e); mark(sampleBox, true);
      }
    }

    async function load() {
      const mine = ++gen;
      for (const box of Object.values(parts)) { mark(box, false); box.replaceChildren(h("p", { class: "muted" }, "counting…")); }
      const b = body();
      const stats = Lab.api("/api/lab/ngrams/stats", b).then((d) => {
        if (mine !== gen) return;
        describe(d);
        parts.unigrams.replaceChildren(histogram(d)); mark(parts.unigrams, true);
        parts.bigrams.replaceChildren(heatmap(d)); mark(parts.bigrams, true);
        parts.pairs.replaceChildren(pairs(d)); mark(parts.pairs, true);
      }).catch((e) => { if (mine === gen) for (const k of ["unigrams", "bigrams", "pairs"]) fail(parts[k], e); });
      const tab = Lab.api("/api/lab/ngrams/table", b).then((d) => {
        if (mine !== gen) return;
        parts.table.replaceChildren(table(d)); mark(parts.table, true);
      }).catch((e) => { if (mine === gen) fail(parts.table, e); });
      await Promise.all([stats, tab, sample()]);
    }

    order.addEventListener("input", () => { orderOut.textContent = order.value; });
    order.addEventListener("change", sample);
    smoothing.addEventListener("change", sample);
    sampleBtn.addEventListener("click", sample);
    textSel.addEventListener("change", load);
    levelSel.addEventListener("change", load);

    return Lab.api("/api/lab/texts").then(({ texts }) => {
      textSel.replaceChildren(...texts.map((t) => h("option", { value: t }, t === "builtin" ? "built-in corpus (Python source)" : t)));
      return load();
    });
  }

  Lab.register({ id: "ngrams", title: "N-gram statistics", mount });
})();

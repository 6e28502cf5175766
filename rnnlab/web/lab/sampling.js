// The lab's sampling section: a language model's next-token distribution after a prime (temperature, top-k
// and top-p redrawn live, argmax marked, a seeded draw), the same prime continued five ways side by side,
// and a beam search's tree. Every number comes from /api/lab/sampling/* (rnnlab.decoding.distribution,
// rnnlab.sampling.generate and rnnlab.sampling.beam_tree: what `rnnlab sample` runs).
"use strict";

(function () {
  const { h, svg } = Lab;
  const PRIME = "    def __init__(self";
  const BARS = 40;
  const fmtP = (p) => (p === 0 ? "0" : p < 1e-3 ? p.toExponential(1) : p.toFixed(3));

  /** The distribution as bars, most probable first: height p at the temperature, grey where top-k / top-p cut
   *  the token, the model's own softmax (temperature 1) as an outline, argmax and the draw marked. */
  function bars(d) {
    const n = d.tokens.length, bw = 22, m = { l: 44, r: 84, t: 22, b: 46 };
    const w = m.l + n * bw + m.r, hgt = 250, ih = hgt - m.t - m.b;
    const max = Math.max(...d.tokens.map((t) => Math.max(t.p_temp, t.p_model)), 1e-9);
    const y = (p) => m.t + ih - (p / max) * ih;
    const el = svg("svg", { width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: "img", class: "smp-bars",
      "aria-label": `next-token distribution: the ${n} most probable of ${d.vocab_size} tokens at temperature ${d.temperature}; ${d.kept} kept by top-k and top-p` });
    el.append(svg("line", { x1: m.l, y1: m.t + ih, x2: m.l + n * bw, y2: m.t + ih, class: "axis" }));
    for (const f of [0, 0.5, 1]) {
      el.append(svg("text", { x: m.l - 4, y: y(f * max) + 4, "text-anchor": "end", class: "muted" }, fmtP(f * max)),
                svg("line", { x1: m.l, x2: m.l + n * bw, y1: y(f * max), y2: y(f * max), stroke: "#eee" }));
    }
    d.tokens.forEach((t, i) => {
      const x = m.l + i * bw;
      const argmax = t.id === d.argmax.id, drawn = t.id === d.draw.id;
      const g = svg("g", { class: "smp-bar", "data-id": t.id, "data-p": t.p, "data-p-temp": t.p_temp,
                           "data-kept": String(t.kept), "data-argmax": String(argmax), "data-drawn": String(drawn) });
      g.append(
        svg("rect", { x: x + 2, y: y(t.p_temp), width: bw - 4, height: Math.max(0.5, m.t + ih - y(t.p_temp)),
                      fill: t.kept ? "#3b7dd8" : "#c9cdd3", stroke: drawn ? "#e8590c" : "none", "stroke-width": drawn ? 3 : 0 }),
        svg("rect", { x: x + 2, y: y(t.p_model), width: bw - 4, height: Math.max(0.5, m.t + ih - y(t.p_model)),
                      fill: "none", stroke: "#1d1d1f", "stroke-dasharray": "2 2", "stroke-width": 0.8 }),
        svg("text", { x: x + bw / 2, y: m.t + ih + 14, "text-anchor": "middle", class: "lab-mono" }, Lab.visible(t.text).slice(0, 3)),
        svg("title", {}, `${JSON.stringify(t.text)}: p = ${fmtP(t.p_model)} (model), ${fmtP(t.p_temp)} at temperature ${d.temperature}, ` +
                         (t.kept ? `${fmtP(t.p)} after top-k and top-p` : "cut by top-k / top-p")));
      if (argmax) g.append(svg("text", { x: x + bw / 2, y: y(t.p_temp) - 5, "text-anchor": "middle", class: "smp-argmax" }, "max"));
      if (drawn) g.append(svg("text", { x: x + bw / 2, y: m.t + ih + 30, "text-anchor": "middle", style: "fill: #e8590c" }, "▲"));
      el.append(g);
    });
    const r = d.rest;
    if (r.count) {
      el.append(svg("text", { x: m.l + n * bw + 6, y: m.t + ih - 4, class: "muted" }, `+${r.count} more`),
                svg("text", { x: m.l + n * bw + 6, y: m.t + ih + 12, class: "muted" }, `p ${fmtP(r.p_temp)}`));
    }
    return el;
  }

  function key() {
    const sw = (fill, stroke, dash) => svg("svg", { width: 14, height: 10, "aria-hidden": "true" },
      svg("rect", { x: 1, y: 1, width: 12, height: 8, fill, stroke: stroke || "none", "stroke-dasharray": dash || "" }));
    return h("div", { class: "smp-key muted" },
      h("span", {}, sw("#3b7dd8"), " kept (p at the temperature)"), h("span", {}, sw("#c9cdd3"), " cut by top-k / top-p"),
      h("span", {}, sw("none", "#1d1d1f", "2 2"), " the model's own softmax (temperature 1)"),
      h("span", {}, sw("none", "#e8590c"), " ▲ the draw"));
  }

  /** The beam search tree: a column per step, the kept hypotheses (best first) then the best pruned ones
   *  (grey, dashed); each node's colour is its token's own probability, the best path is drawn thick. */
  function tree(d) {
    const k = Math.max(...d.steps.map((s) => s.kept.length)), pr = Math.max(0, ...d.steps.map((s) => s.pruned.length));
    const cw = 92, rh = 36, nw = 64, nh = 28, m = { l: 64, t: 24, b: 10 };
    const w = m.l + d.steps.length * cw + 20, hgt = m.t + (k + pr) * rh + (pr ? 10 : 0) + m.b;
    const scale = Lab.colorScale(0, 1, "sequential");
    const el = svg("svg", { width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: "img", class: "smp-tree",
      "aria-label": `beam search tree: ${d.steps.length} steps, beam ${d.beam_width}; best continuation ${JSON.stringify(d.continuation)}, log probability ${d.score.toFixed(3)}` });
    const cx = (t) => m.l + t * cw + nw / 2, cy = (row) => m.t + row * rh + nh / 2 + (row >= k ? 10 : 0);
    el.append(svg("rect", { x: 4, y: cy(0) - nh / 2, width: 48, height: nh, rx: 4, fill: "#f1f1f3", stroke: "#999" }),
              svg("text", { x: 28, y: cy(0) + 4, "text-anchor": "middle" }, "prime"));
    if (pr) el.append(svg("text", { x: 4, y: cy(k) + 4, class: "muted" }, "pruned"));
    const onBest = (t, i) => d.best[t] === i;
    const edges = svg("g", {}), nodes = svg("g", {});
    d.steps.forEach((s, t) => {
      el.append(svg("text", { x: cx(t), y: 12, "text-anchor": "middle", class: "muted" }, `step ${t + 1}`));
      const draw = (n, row, kind, rank) => {
        const best = kind === "kept" && onBest(t, rank);
        const px = t === 0 ? 52 : cx(t - 1) + nw / 2, py = cy(n.parent);
        edges.append(svg("path", { d: `M${px},${py} C${px + 14},${py} ${cx(t) - nw / 2 - 14},${cy(row)} ${cx(t) - nw / 2},${cy(row)}`,
          fill: "none", stroke: best ? "#e8590c" : kind === "kept" ? "#8a94a3" : "#c9cdd3",
          "stroke-width": best ? 3 : 1, "stroke-dasharray": kind === "kept" ? "" : "3 3" }));
        const p = Math.exp(n.logprob), dark = kind === "kept" && p > 0.45;  // white text on the darker blues
        nodes.append(svg("g", { class: "smp-node", "data-step": t, "data-rank": rank, "data-kind": kind, "data-best": String(best),
                                "data-token": n.text, "data-score": n.score },
          svg("rect", { x: cx(t) - nw / 2, y: cy(row) - nh / 2, width: nw, height: nh, rx: 4, fill: kind === "kept" ? scale(p) : "#fff",
                        stroke: best ? "#e8590c" : kind === "kept" ? "#556" : "#bbb", "stroke-width": best ? 2.5 : 1,
                        "stroke-dasharray": kind === "kept" ? "" : "3 2" }),
          svg("text", { x: cx(t), y: cy(row) - 1, "text-anchor": "middle", class: "lab-mono",
                        style: `fill: ${dark ? "#fff" : "#1d1d1f"}` }, Lab.visible(n.text).slice(0, 4)),
          svg("text", { x: cx(t), y: cy(row) + 10, "text-anchor": "middle",
                        style: `font-size: 9px; fill: ${dark ? "#fff" : "#555"}` }, n.score.toFixed(2)),
          svg("title", {}, `${kind === "kept" ? "kept" : "pruned"} at step ${t + 1}: ${JSON.stringify(n.text)} after hypothesis ${n.parent + 1}; ` +
                           `log p(token | prefix) = ${n.logprob.toFixed(3)}, total log probability ${n.score.toFixed(3)}`)));
      };
      s.kept.forEach((n, i) => draw(n, i, "kept", i));
      s.pruned.forEach((n, i) => draw(n, k + i, "pruned", i));
    });
    el.append(edges, nodes);
    return h("div", {}, el, h("div", { class: "lab-row" }, Lab.legend(scale, "node colour: p(token | its prefix)"),
      h("span", { class: "muted" }, "numbers: total log probability (nats); thick orange: the best path; dashed grey: the best candidates that fell out of the beam")));
  }

  const STYLE = `
    .smp-card { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .7rem; min-width: 0; background: #fff; }
    .smp-card h4 { margin: 0 0 .2rem; font-size: .9rem; }
    .smp-card .lab-text { margin: .35rem 0; max-height: 16rem; overflow-y: auto; }
    .smp-prime { color: var(--muted); }
    .smp-command { font-size: .75rem; color: var(--muted); overflow-wrap: anywhere; white-space: pre-wrap; }
    .smp-key { display: flex; flex-wrap: wrap; gap: .3rem 1rem; margin: .3rem 0; }
    .smp-key svg { vertical-align: middle; }
    .smp-argmax { font-size: 9px; fill: #1d1d1f; font-weight: 600; }
    .smp-dist, .smp-tree-box { overflow-x: auto; }`;

  function mount(el) {
    if (!document.getElementById("smp-style")) document.head.append(h("style", { id: "smp-style" }, STYLE));
    const modelSel = h("select", { "aria-label": "Model" });
    const prime = h("textarea", { "aria-label": "Prime", rows: 2, spellcheck: "false" });
    prime.value = PRIME;
    const temp = h("input", { type: "range", min: 0.1, max: 3, step: 0.05, value: 1, "aria-label": "Temperature" });
    const tempOut = h("output", { class: "lab-mono", "aria-hidden": "true" }, "1.00");
    const topK = h("input", { type: "number", min: 0, step: 1, value: 0, "aria-label": "Top-k (0: all)" });
    const topP = h("input", { type: "range", min: 0.05, max: 1, step: 0.05, value: 1, "aria-label": "Top-p" });
    const topPOut = h("output", { class: "lab-mono", "aria-hidden": "true" }, "1.00");
    const seed = h("input", { type: "number", min: 0, step: 1, value: 0, "aria-label": "Seed" });
    const drawBtn = h("button", { type: "button" }, "Draw");
    const distBox = h("div", { class: "smp-dist", dataset: { ready: "false" } });
    const distNote = h("div", { class: "lab-status", "aria-live": "polite" });

    const length = h("input", { type: "number", min: 1, max: 400, step: 1, value: 120, "aria-label": "Length" });
    const contK = h("input", { type: "number", min: 1, step: 1, value: 5, "aria-label": "k of top-k" });
    const contP = h("input", { type: "number", min: 0.05, max: 1, step: 0.05, value: 0.9, "aria-label": "p of top-p" });
    const contBeam = h("input", { type: "number", min: 1, max: 16, step: 1, value: 5, "aria-label": "Beam width" });
    const contBtn = h("button", { type: "button" }, "Continue");
    const contBox = h("div", { class: "lab-grid smp-continuations", dataset: { ready: "false" } });

    const beamW = h("input", { type: "number", min: 1, max: 8, step: 1, value: 3, "aria-label": "Tree beam width" });
    const beamL = h("input", { type: "number", min: 1, max: 30, step: 1, value: 8, "aria-label": "Steps" });
    const beamPr = h("input", { type: "number", min: 0, max: 5, step: 1, value: 2, "aria-label": "Pruned shown per step" });
    const beamBtn = h("button", { type: "button" }, "Search");
    const treeBox = h("div", { class: "smp-tree-box", dataset: { ready: "false" } });

    const panel = (title, note, ...body) => h("div", { class: "lab-panel" }, h("h3", {}, title), note ? h("p", { class: "muted" }, note) : null, ...body);
    el.append(
      h("p", {}, "A language model gives a distribution over the next token. How the next token is chosen from it (the most probable, a random draw, a draw from a sharpened or truncated distribution, or a search over whole continuations) changes the text it writes."),
      h("div", { class: "lab-row" }, h("label", {}, "Model", modelSel), h("label", { style: { flex: "1 1 320px" } }, "Prime", prime)),
      panel("The next-token distribution",
        "Temperature τ divides the logits: p ∝ exp(z / τ). Below 1 it sharpens the distribution, above 1 it flattens it. Top-k keeps the k most probable tokens, top-p the fewest whose probability reaches p; the rest (grey) are cut and the kept renormalised before the draw.",
        h("div", { class: "lab-row" },
          h("label", {}, "Temperature", h("span", { class: "lab-row", style: { margin: 0 } }, temp, tempOut)),
          h("label", {}, "Top-k (0: all)", topK),
          h("label", {}, "Top-p", h("span", { class: "lab-row", style: { margin: 0 } }, topP, topPOut)),
          h("label", {}, "Seed", seed), drawBtn),
        distBox, key(), distNote),
      panel("Continuations side by side",
        "The same prime continued five ways, the temperature and seed above. Each text is what the command under it writes.",
        h("div", { class: "lab-row" }, h("label", {}, "Length", length), h("label", {}, "k of top-k", contK),
          h("label", {}, "p of top-p", contP), h("label", {}, "Beam width", contBeam), contBtn),
        contBox),
      panel("Beam search",
        "Beam search keeps the k most probable prefixes at every step: each is extended by every token, and the k best of those k × |V| candidates survive. Its score is the total log probability of the continuation; it finds likely text, often repetitive.",
        h("div", { class: "lab-row" }, h("label", {}, "Beam width", beamW), h("label", {}, "Steps", beamL),
          h("label", {}, "Pruned shown per step", beamPr), beamBtn),
        treeBox));

    const num = (input, lo, hi, dflt) => {
      const v = Number(input.value);
      return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : dflt;
    };
    const fail = (box, e) => { box.replaceChildren(h("p", { class: "lab-error", role: "alert" }, e.message)); box.dataset.ready = "true"; };
    const base = () => ({ model: modelSel.value, prime: prime.value });
    const gens = { dist: 0, cont: 0, tree: 0 };  // the latest request of each kind: an older answer is dropped

    async function distribution() {
      const mine = ++gens.dist;
      tempOut.textContent = Number(temp.value).toFixed(2);
      topPOut.textContent = Number(topP.value).toFixed(2);
      distBox.dataset.ready = "false";
      try {
        const d = await Lab.api("/api/lab/sampling/distribution", { ...base(), temperature: num(temp, 0.01, 100, 1),
          top_k: Math.floor(num(topK, 0, 1e6, 0)), top_p: num(topP, 0.01, 1, 1), seed: Math.floor(num(seed, 0, 2 ** 53, 0)), bars: BARS });
        if (mine !== gens.dist) return;
        distBox.replaceChildren(bars(d));
        distBox.dataset.ready = "true";
        const dr = d.draw;
        distNote.replaceChildren(
          h("span", {}, `argmax ${JSON.stringify(d.argmax.text)} (p ${fmtP(d.argmax.p_model)}); ${d.kept} of ${d.vocab_size} tokens kept. ` +
            `Draw with seed ${dr.seed}: ${JSON.stringify(dr.text)}, p ${fmtP(dr.p)} after the cuts` + (dr.rank >= d.tokens.length ? ` (rank ${dr.rank + 1}, not among the bars)` : "") + ". "),
          h("span", { class: "lab-mono" }, `$ ${dr.command}`));
      } catch (e) { if (mine === gens.dist) fail(distBox, e); }
    }

    async function continuations() {
      const mine = ++gens.cont;
      contBox.dataset.ready = "false";
      contBox.replaceChildren(h("p", { class: "muted" }, "writing…"));
      try {
        const d = await Lab.api("/api/lab/sampling/continuations", { ...base(), length: Math.floor(num(length, 1, 400, 120)),
          temperature: num(temp, 0.01, 100, 1), top_k: Math.floor(num(contK, 1, 1e6, 5)), top_p: num(contP, 0.01, 1, 0.9),
          beam_width: Math.floor(num(contBeam, 1, 16, 5)), seed: Math.floor(num(seed, 0, 2 ** 53, 0)) });
        if (mine !== gens.cont) return;
        contBox.replaceChildren(...d.continuations.map((c) => h("div", { class: "smp-card", dataset: { strategy: c.strategy } },
          h("h4", {}, c.strategy), h("div", { class: "muted" }, c.about),
          h("div", { class: "lab-text" }, h("span", { class: "smp-prime" }, d.prime), h("span", { class: "smp-continuation" }, c.continuation)),
          h("div", { class: "lab-mono smp-command" }, "$ " + c.command))));
        contBox.dataset.ready = "true";
      } catch (e) { if (mine === gens.cont) fail(contBox, e); }
    }

    async function beam() {
      const mine = ++gens.tree;
      treeBox.dataset.ready = "false";
      try {
        const d = await Lab.api("/api/lab/sampling/beam", { ...base(), beam_width: Math.floor(num(beamW, 1, 8, 3)),
          length: Math.floor(num(beamL, 1, 30, 8)), pruned: Math.floor(num(beamPr, 0, 5, 2)) });
        if (mine !== gens.tree) return;
        treeBox.replaceChildren(tree(d), h("div", { class: "lab-status" },
          h("span", {}, `best: ${JSON.stringify(d.continuation)}, log probability ${d.score.toFixed(3)}. `),
          h("span", { class: "lab-mono" }, "$ " + d.command)));
        treeBox.dataset.ready = "true";
      } catch (e) { if (mine === gens.tree) fail(treeBox, e); }
    }

    const all = () => Promise.all([distribution(), continuations(), beam()]);
    let primeTimer = null;
    temp.addEventListener("input", distribution);
    topP.addEventListener("input", distribution);
    topK.addEventListener("change", distribution);
    seed.addEventListener("change", distribution);
    drawBtn.addEventListener("click", () => { seed.value = String(Math.floor(num(seed, 0, 2 ** 53, 0)) + 1); distribution(); });
    contBtn.addEventListener("click", continuations);
    beamBtn.addEventListener("click", beam);
    prime.addEventListener("input", () => { clearTimeout(primeTimer); primeTimer = setTimeout(all, 400); });
    modelSel.addEventListener("change", async () => {
      try { await Lab.whenReady(distBox, modelSel.value); } catch (e) { fail(distBox, e); return; }
      await all();
    });

    const choices = (models) => models.filter((m) => m.kind === "language-model").map((m) => [m.name, `${m.name}: ${m.about || m.cell}`]);
    Lab.onModels((models) => Lab.setOptions(modelSel, choices(models)));
    return Lab.models().then(async (models) => {
      const lms = models.filter((m) => m.kind === "language-model");
      Lab.setOptions(modelSel, choices(models));
      modelSel.value = lms.some((m) => m.name === "lstm") ? "lstm" : (lms[0] || {}).name || "";
      await Lab.whenReady(distBox, modelSel.value);
      await all();
    });
  }

  Lab.register({ id: "sampling", title: "Sampling", mount });
})();

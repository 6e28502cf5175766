// How the model is fed: the lab's LSTMs trained with teacher forcing, free running, scheduled sampling and
// professor forcing (and any language model given on the command line), side by side: their loss curves
// (each run's metrics.jsonl), the probability eps_i of feeding the true token at step i, the exposure-bias
// curves (rnnlab exposure, measured once and kept by the server) and a sample from each with one prime and
// seed. Every number comes from /api/lab/feeding/... (rnnlab.lab.sections.feeding).
"use strict";

(function () {
  const { h, svg, lineChart } = Lab;
  const COLORS = ["#0a64c8", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#666666"];
  const EXPOSURE = { prefixes: 8, prefix_len: 50, length: 100, buckets: 5, temperature: 1.0, seed: 0 };

  const STYLE = `
  .fd-models { display: flex; flex-wrap: wrap; gap: .3rem 1.2rem; border: none; padding: 0; margin: 0 0 .6rem; }
  .fd-models legend { font-size: .8rem; color: var(--muted); padding: 0; margin-bottom: .2rem; }
  .fd-key { display: flex; flex-wrap: wrap; gap: .2rem 1rem; font-size: .8rem; margin: .3rem 0; }
  .fd-key span.sw { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: .3rem; }
  .fd-key span.sw.dash { background: repeating-linear-gradient(to right, #888 0 4px, transparent 4px 7px) !important; }
  .fd-samples { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: .8rem; }
  .fd-sample { min-width: 0; }
  .fd-sample h4 { margin: 0 0 .3rem; font-size: .9rem; }
  .fd-note { font-size: .85rem; color: var(--muted); margin: .2rem 0; overflow-wrap: anywhere; }`;


  function key(items) {
    return h("div", { class: "fd-key", role: "list" }, items.map((it) =>
      h("span", { role: "listitem" }, h("span", { class: "sw" + (it.dash ? " dash" : ""), style: { background: it.color } }), it.label)));
  }

  function mount(el) {
    if (!document.getElementById("fd-style")) document.head.append(h("style", { id: "fd-style" }, STYLE));
    const pick = h("fieldset", { class: "fd-models" }, h("legend", {}, "Runs compared"));
    const status = h("div", { class: "lab-status", "aria-live": "polite" });
    const loss = h("div", { class: "fd-loss" }), sched = h("div", { class: "fd-schedule" });
    const expo = h("div", { class: "fd-exposure" }), samples = h("div", { class: "fd-samples" });
    const expoStatus = h("div", { class: "lab-status", "aria-live": "polite" });
    const prime = h("input", { type: "text", value: "def ", maxlength: 200, spellcheck: "false", "aria-label": "Prime" });
    const seed = h("input", { type: "number", value: 0, min: 0, step: 1, "aria-label": "Seed" });
    const length = h("input", { type: "number", value: 200, min: 1, max: 500, step: 1, "aria-label": "Length" });
    const sampleBtn = h("button", { type: "button" }, "Sample");
    const measureBtn = h("button", { type: "button", class: "secondary" }, "Measure again");
    const expoPrefixes = h("input", { type: "number", value: EXPOSURE.prefixes, min: 1, max: 20, "aria-label": "Prefixes" });
    const expoLength = h("input", { type: "number", value: EXPOSURE.length, min: 10, max: 400, "aria-label": "Generated length" });
    const panel = (title, ...body) => h("div", { class: "lab-panel" }, h("h3", {}, title), ...body);

    el.append(
      h("p", { class: "muted" }, "Teacher forcing trains on the true previous character; at generation the model reads " +
        "its own. Free running trains on its own samples, scheduled sampling moves from one to the other with " +
        "a schedule \u03b5\u1d62, professor forcing adds a discriminator that makes the free-running dynamics look like " +
        "the teacher-forced ones. The lab's four LSTMs have one size and one corpus."),
      pick, status,
      h("div", { class: "lab-grid" },
        panel("Loss: bits per character (validation: dots; training batches: thin)", loss),
        panel("\u03b5\u1d62: the probability of feeding the true character at step i", sched)),
      panel("Exposure bias: the model continues prefixes of the validation text with its own samples",
        h("p", { class: "fd-note" }, "Left: how likely a reference 5-gram model finds the generated text (solid) and the " +
          "true continuation (dashed), bits per character, against the distance from the prefix. Right: the " +
          "Jensen-Shannon divergence of the bigrams of the generated and of the true text (dashed: two true " +
          "texts, the floor). Measured once per model (seconds) and kept by the server."),
        h("div", { class: "lab-row" }, h("label", {}, "Prefixes", expoPrefixes), h("label", {}, "Generated length", expoLength), measureBtn),
        expoStatus, expo),
      panel("Samples: the same prime and seed for every run",
        h("div", { class: "lab-row" }, h("label", { style: { flex: "1 1 220px" } }, "Prime", prime), h("label", {}, "Seed", seed),
          h("label", {}, "Length", length), sampleBtn),
        samples));

    let all = [], runs = {}, reports = {}, chosen = [];
    const color = (name) => COLORS[all.findIndex((m) => m.name === name) % COLORS.length];

    function drawRuns() {
      const shown = chosen.filter((n) => runs[n]);
      const unit = shown.length ? runs[shown[0]].unit : "bpc";
      const series = [];
      for (const n of shown) {
        const r = runs[n];
        series.push({ points: r.train, color: color(n), width: 1, opacity: 0.45, attrs: { "data-model": n, "data-split": "train", "data-points": JSON.stringify(r.train) } });
        series.push({ points: r.val, color: color(n), width: 2, dot: true, attrs: { "data-model": n, "data-split": "val", "data-points": JSON.stringify(r.val) } });
      }
      loss.replaceChildren(lineChart({ series, xLabel: "optimiser step", yLabel: unit === "bpw" ? "bits per word" : "bits per character", label: "loss curves" }),
        key(shown.map((n) => ({ color: color(n), label: `${n} (${runs[n].feeding})` }))));
      const eps = shown.filter((n) => runs[n].schedule);
      const notes = shown.filter((n) => !runs[n].schedule).map((n) => h("p", { class: "fd-note" },
        `${n}: ${runs[n].feeding === "professor" ? "professor forcing scores the true characters (\u03b5 = 1) and adds a free-running pass judged by a discriminator; it does not mix the two" : "no schedule"}.`));
      sched.replaceChildren(lineChart({
        series: eps.map((n) => { const s = runs[n].schedule, pts = s.steps.map((x, i) => [x, s.eps[i]]);
          return { points: pts, color: color(n), attrs: { "data-model": n, "data-points": JSON.stringify(pts) } }; }),
        xLabel: "training step i", yLabel: "\u03b5\u1d62", yMin: 0, yMax: 1, label: "the probability of the true token" }),
        key(eps.map((n) => ({ color: color(n), label: `${n} (${runs[n].feeding}${runs[n].options.schedule ? ", " + runs[n].options.schedule : ""})` }))),
        ...notes);
    }

    function drawExposure() {
      const shown = chosen.filter((n) => reports[n]);
      const bits = [], js = [];
      for (const n of shown) {
        const r = reports[n], pts = (k) => r.distance.map((d, i) => [d, r[k][i]]);
        const a = (k) => ({ "data-model": n, "data-key": k, "data-points": JSON.stringify(pts(k)) });
        bits.push({ points: pts("generated_ref_bits"), color: color(n), dot: true, attrs: a("generated_ref_bits") });
        bits.push({ points: pts("real_ref_bits"), color: color(n), dash: true, width: 1, attrs: a("real_ref_bits") });
        js.push({ points: pts("divergence"), color: color(n), dot: true, attrs: a("divergence") });
        js.push({ points: pts("real_divergence"), color: color(n), dash: true, width: 1, attrs: a("real_divergence") });
      }
      expo.replaceChildren(h("div", { class: "lab-grid" },
        h("div", {}, lineChart({ series: bits, xLabel: "distance from the prefix (characters)", yLabel: "reference bits per character", label: "reference model's bits" })),
        h("div", {}, lineChart({ series: js, xLabel: "distance from the prefix (characters)", yLabel: "JS divergence (bits)", yMin: 0, label: "n-gram divergence" }))),
        key([...shown.map((n) => ({ color: color(n), label: `${n}: generated` })), { color: "#888", dash: true, label: "true text (floor)" }]),
        ...shown.map((n) => h("p", { class: "fd-note" }, `${n}: generated text is ${reports[n].summary.ref_gap_bits.toFixed(2)} bits per character ` +
          `less likely than the true text under the reference; divergence ${reports[n].summary.divergence.toFixed(3)} (floor ${reports[n].summary.real_divergence.toFixed(3)}).`)));
    }

    async function ready(name) {
      const box = h("div");
      status.append(box);
      try { await Lab.whenReady(box, name); } finally { box.remove(); }
    }

    async function loadRun(name) {
      await ready(name);
      runs[name] = await Lab.api("/api/lab/feeding/run", { model: name });
      drawRuns();
    }

    let measuring = 0;
    async function measure(fresh) {
      const token = ++measuring;
      const settings = { ...EXPOSURE, prefixes: Number(expoPrefixes.value), length: Number(expoLength.value) };
      if (fresh) reports = {};
      const failed = [];
      for (const n of chosen) {
        if (token !== measuring) return;
        if (reports[n]) continue;
        expoStatus.textContent = `measuring ${n}\u2026 (seconds the first time; the server keeps it)`;
        try {
          await ready(n);
          const r = await Lab.api("/api/lab/feeding/exposure", { model: n, ...settings });
          if (token !== measuring) return;
          reports[n] = r;
          expo.dataset.settings = JSON.stringify(settings);
          drawExposure();
        } catch (e) { failed.push(`${n}: ${e.message}`); }
      }
      if (token === measuring) expoStatus.textContent = failed.join("; ");
    }

    async function sample() {
      const body = { prime: prime.value, seed: Number(seed.value), length: Number(length.value) };
      sampleBtn.disabled = true;
      const boxes = chosen.map((n) => {
        const text = h("div", { class: "lab-text fd-text", "aria-live": "polite" });
        const box = h("div", { class: "fd-sample", dataset: { model: n } }, h("h4", { style: { color: color(n) } }, n), text);
        return [n, box, text];
      });
      samples.replaceChildren(...boxes.map((b) => b[1]));
      try {
        await Promise.all(boxes.map(async ([n, , text]) => {
          try {
            await ready(n);
            const r = await Lab.api("/api/lab/feeding/sample", { model: n, ...body });
            text.textContent = r.text;
            text.title = r.command;
          } catch (e) { text.replaceChildren(h("span", { class: "lab-error" }, e.message)); }
        }));
      } finally { sampleBtn.disabled = false; }
    }

    /** Draw the chosen runs; resolves once their curves, exposure reports and samples are drawn. */
    function refresh() {
      chosen = Array.from(pick.querySelectorAll("input:checked")).map((c) => c.value);
      drawRuns();
      return Promise.all([
        Promise.all(chosen.filter((n) => !runs[n]).map((n) => loadRun(n).catch((e) => status.append(h("p", { class: "lab-error" }, `${n}: ${e.message}`))))),
        measure(false), sample()]);
    }

    sampleBtn.addEventListener("click", sample);
    measureBtn.addEventListener("click", () => measure(true));
    prime.addEventListener("keydown", (ev) => { if (ev.key === "Enter") sample(); });

    function offer(m, checked) {
      const box = h("input", { type: "checkbox", value: m.name, checked });
      box.addEventListener("change", refresh);
      pick.append(h("label", { class: "inline", title: m.about || "" }, box, `${m.name}`,
        h("span", { class: "muted" }, m.feeding ? `(${m.feeding}${m.source !== "lab" ? ", " + m.source : ""})` : "")));
    }
    Lab.onModels((models) => {  // a run trained from the page: offered, not ticked (once the first list is in)
      if (!all.length) return;
      for (const m of models) {
        if (m.kind !== "language-model" || all.some((a) => a.name === m.name)) continue;
        all.push(m); offer(m, false);
      }
    });

    return (async () => {
      const got = await Lab.api("/api/lab/feeding/models");
      all = got.models;
      for (const m of all) offer(m, got.default.includes(m.name));
      await refresh();
    })();
  }

  Lab.register({ id: "feeding", title: "How the model is fed", mount });
})();

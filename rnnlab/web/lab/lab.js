// The lab's shell: one tab per section of the lecture, in the lecture's order, and the helpers every
// section uses (window.Lab). A section is a script rnnlab/web/lab/<id>.js that calls
//   Lab.register({id: "<id>", title: "...", mount(el) { ... }})
// mount runs once, the first time its tab is shown, with the section's empty container; it returns a promise
// that resolves once the section's first drawing is complete (every figure it draws on opening). The shell then
// marks the panel data-drawn="1" with data-drawn-ms (milliseconds from showing the tab) and data-drawn-at (from
// the page's start, performance.now()): "drawn" is the one condition tests and benchmarks wait for. A mount
// that fails marks it data-drawn="error".
// Text from a model or a corpus always goes in with textContent, never parsed as HTML.
"use strict";

(function () {
  const SECTIONS = [
    ["elman", "Elman step by step"], ["ngrams", "N-gram statistics"], ["sampling", "Sampling"],
    ["feeding", "How the model is fed"], ["gradients", "Gradients through time"],
    ["classify", "Classification"], ["train", "Train"],
  ];
  const registered = {};
  const mounted = {};

  // A server reachable from other machines asks for its token: the address it printed carries it
  // (?token=...); the page keeps it for this tab and sends it as a header with every request.
  const TOKEN = (() => {
    const given = new URLSearchParams(location.search).get("token");
    if (given) sessionStorage.setItem("rnnlab-token", given);
    return sessionStorage.getItem("rnnlab-token");
  })();

  /** GET path (no body) or POST body as JSON; resolves to the parsed JSON answer. Rejects with an Error
   *  whose .status and .body (the parsed answer, when it is JSON) carry the server's answer. */
  async function api(path, body, options) {
    const headers = {};
    if (TOKEN) headers.Authorization = "Bearer " + TOKEN;
    const init = { headers, signal: options && options.signal };
    if (body !== undefined) {
      init.method = "POST"; headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body);
    }
    let resp;
    try { resp = await fetch(path, init); } catch (e) {
      if (e.name === "AbortError") throw e;
      const err = new Error("the server cannot be reached (" + e.message + ")"); err.status = 0; err.body = null; throw err;
    }
    let parsed = null;
    const text = await resp.text();
    try { parsed = text ? JSON.parse(text) : null; } catch (_) { parsed = null; }
    if (!resp.ok) {
      const err = new Error((parsed && parsed.error) || (resp.status + " " + resp.statusText));
      err.status = resp.status; err.body = parsed; throw err;
    }
    return parsed;
  }

  /** An element: h("div", {class: "x", onclick: f, style: {color: "red"}, dataset: {i: 1}}, "text", child, [more]).
   *  Strings become text nodes; null and false children are skipped. */
  function h(tag, attrs, ...children) {
    return fill(document.createElement(tag), attrs, children);
  }
  /** An SVG element with these attributes (and children, as for h). */
  function svg(tag, attrs, ...children) {
    return fill(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, children);
  }
  function fill(el, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "text") el.textContent = v;
      else if (k === "class") el.setAttribute("class", v);
      else if (k in el && !(el instanceof SVGElement) && typeof v !== "string") el[k] = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // colour schemes: stops from lo to hi (sequential: white to dark blue; diverging: blue, white, red)
  const SCHEMES = {
    sequential: [[247, 251, 255], [107, 174, 214], [8, 48, 107]],
    diverging: [[33, 102, 172], [247, 247, 247], [178, 24, 43]],
    heat: [[255, 255, 204], [253, 141, 60], [128, 0, 38]],
  };
  /** A function value -> CSS colour, from lo to hi (clamped), with .lo, .hi, .scheme and .stops(n). */
  function colorScale(lo, hi, scheme) {
    const stops = SCHEMES[scheme || "sequential"] || SCHEMES.sequential;
    const span = hi - lo || 1;
    const f = (v) => {
      const t = Math.min(1, Math.max(0, (v - lo) / span)) * (stops.length - 1);
      const i = Math.min(stops.length - 2, Math.floor(t)), u = t - i;
      const c = stops[i].map((a, j) => Math.round(a + u * (stops[i + 1][j] - a)));
      return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
    };
    f.lo = lo; f.hi = hi; f.scheme = scheme || "sequential";
    f.stops = (n) => Array.from({ length: n }, (_, k) => f(lo + (k / (n - 1)) * (hi - lo)));
    return f;
  }
  function fmt(v) {
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(1) : String(Number(v.toPrecision(3)));
  }
  /** A legend for a colour scale: label, lo, the gradient, hi. */
  function legend(scale, label) {
    const bar = h("span", { class: "bar", style: { background: `linear-gradient(to right, ${scale.stops(9).join(", ")})` } });
    return h("span", { class: "lab-legend", role: "img", "aria-label": `${label}: colour from ${fmt(scale.lo)} to ${fmt(scale.hi)}` },
      h("span", {}, label), h("span", { class: "ends lo" }, fmt(scale.lo)), bar, h("span", { class: "ends hi" }, fmt(scale.hi)));
  }

  /** Whitespace made visible (space, newline, tab), for one symbol shown on its own. */
  function visible(s) {
    return s.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5") || "\u2205";
  }

  /** Resolves once the lab model `name` is ready (asking the server to train it if it must), showing its
   *  training progress inside `el` meanwhile (and removing it after). A failed training is shown with its
   *  reason and a button to train it again. Rejects when the server cannot be reached. */
  async function whenReady(el, name) {
    let info = await api(`/api/lab/models/${encodeURIComponent(name)}/prepare`, {});
    if (info.ready) return info;
    const bar = h("progress", { max: 1, value: 0, "aria-label": `training ${name}` });
    const line = h("div", { class: "lab-status" });
    const box = h("div", { class: "lab-progress", dataset: { model: name } }, h("div", {}, `The lab is training its model “${name}” (once; it is cached).`), bar, line);
    el.append(box);
    try {
      for (;;) {
        const p = info.progress || {};
        bar.value = p.fraction || 0;
        if (p.state === "failed") {  // say why, and let the reader try again
          line.textContent = `training ${name} failed: ${p.error || "see the server's log"}`;
          line.className = "lab-error";
          await new Promise((r) => box.append(h("button", { type: "button", class: "secondary", onclick: (ev) => { ev.target.remove(); r(); } }, "Train it again")));
          line.className = "lab-status";
          info = await api(`/api/lab/models/${encodeURIComponent(name)}/prepare`, {});
          if (info.ready) return info;
          continue;
        }
        line.textContent = p.state === "training"
          ? `${Math.round(100 * (p.fraction || 0))}% of ${p.budget_s || "?"} s of CPU time` + (p.loss != null ? `, training loss ${p.loss.toFixed(3)} nats` : "")
          : "queued behind another model";
        await new Promise((r) => setTimeout(r, 1000));
        info = await api(`/api/lab/models/${encodeURIComponent(name)}`);
        if (info.ready) return info;
        if (info.progress && info.progress.state === "absent") info = await api(`/api/lab/models/${encodeURIComponent(name)}/prepare`, {});
      }
    } finally { box.remove(); }
  }

  let modelsCache = null;
  /** GET /api/lab/models, fetched afresh when `fresh`; a fresh list is also given to every onModels listener
   *  (a run trained from the page joins the sections' model choices). */
  async function models(fresh) {
    if (fresh || !modelsCache) {
      modelsCache = api("/api/lab/models").catch((e) => { modelsCache = null; throw e; });
      if (fresh) modelsCache.then((list) => document.dispatchEvent(new CustomEvent("lab:models", { detail: list }))).catch(() => {});
    }
    return modelsCache;
  }
  /** Call fn(list) with every fresh list of the lab's models (after a run trained from the page gets a checkpoint). */
  function onModels(fn) { document.addEventListener("lab:models", (ev) => fn(ev.detail)); }
  /** Fill a <select> with options [value, label], keeping its value when it is still offered. */
  function setOptions(select, options) {
    const keep = select.value;
    select.replaceChildren(...options.map(([value, label]) => h("option", { value }, label)));
    if (options.some(([value]) => value === keep)) select.value = keep;
  }

  function showError(msg) {
    const e = document.getElementById("lab-error");
    e.textContent = msg || ""; e.hidden = !msg;
  }

  function register(section) {
    if (!section || !section.id || typeof section.mount !== "function") throw new Error("Lab.register needs {id, title, mount(el)}");
    registered[section.id] = section;
  }

  // --- tabs (WAI-ARIA tabs: arrow keys, Home and End move between them, each shows its panel) ----
  function tabs() { return Array.from(document.querySelectorAll("#lab-tabs [role=tab]")); }

  function show(id, focus) {
    for (const t of tabs()) {
      const on = t.dataset.section === id;
      t.setAttribute("aria-selected", String(on)); t.tabIndex = on ? 0 : -1;
      if (on && focus) t.focus();
      document.getElementById("panel-" + t.dataset.section).hidden = !on;
    }
    if (location.hash !== "#" + id) history.replaceState(null, "", location.pathname + location.search + "#" + id);
    const el = document.getElementById("panel-" + id);
    if (!mounted[id]) {
      mounted[id] = true;
      const s = registered[id];
      const body = el.querySelector(".lab-section-body");
      const t0 = performance.now();
      const drawn = (state) => {
        const at = performance.now();
        el.dataset.drawnMs = String(Math.round(at - t0)); el.dataset.drawnAt = String(Math.round(at));
        el.dataset.drawn = state;
      };
      if (!s) { body.append(h("p", { class: "muted" }, "This section is not installed on this server.")); drawn("error"); return; }
      Promise.resolve().then(() => s.mount(body)).then(() => drawn("1"), (e) => {
        body.append(h("p", { class: "lab-error", role: "alert" }, e && e.message ? e.message : String(e)));
        drawn("error");
      });
    }
  }

  function start() {
    const bar = document.getElementById("lab-tabs"), panels = document.getElementById("lab-panels");
    for (const [id, fallback] of SECTIONS) {
      const title = (registered[id] && registered[id].title) || fallback;
      const tab = h("button", { role: "tab", id: "tab-" + id, "aria-controls": "panel-" + id, "aria-selected": "false",
                                tabindex: "-1", dataset: { section: id }, onclick: () => show(id, true) }, title);
      bar.append(tab);
      panels.append(h("section", { role: "tabpanel", id: "panel-" + id, "aria-labelledby": "tab-" + id, hidden: true,
                                   tabindex: "0", dataset: { section: id } },
        h("h2", {}, title), h("div", { class: "lab-section-body" })));
    }
    bar.addEventListener("keydown", (ev) => {
      const all = tabs(), i = all.indexOf(document.activeElement);
      if (i < 0) return;
      let j = null;
      if (ev.key === "ArrowRight") j = (i + 1) % all.length;
      else if (ev.key === "ArrowLeft") j = (i - 1 + all.length) % all.length;
      else if (ev.key === "Home") j = 0;
      else if (ev.key === "End") j = all.length - 1;
      if (j === null) return;
      ev.preventDefault();
      show(all[j].dataset.section, true);
    });
    const q = TOKEN ? "?token=" + encodeURIComponent(TOKEN) : "";
    document.getElementById("models-link").href = "/api/lab/models" + q;
    document.getElementById("docs-link").href = "/docs" + q;
    const wanted = location.hash.slice(1);
    show(SECTIONS.some(([id]) => id === wanted) ? wanted : SECTIONS[0][0], false);
    api("/api/lab/prepare", {}).catch(() => {});  // the lab's models not trained yet: all queued, in the tabs' order
    pollJobs();
  }

  // the footer says what the lab is training, so a slow first answer is explained
  async function pollJobs() {
    const foot = document.getElementById("lab-jobs");
    try {
      const { jobs } = await api("/api/lab/jobs");
      foot.textContent = jobs.length ? "Training: " + jobs.map((j) =>
        `${j.name} (${j.state === "training" ? Math.round(100 * j.fraction) + "%" : j.state})`).join(", ") : "";
    } catch (_) { /* the server went away; try again later */ }
    setTimeout(pollJobs, 3000);
  }

  function tickFmt(v) {
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-2 || a >= 1e4) ? v.toExponential(0) : String(Number(v.toPrecision(3)));
  }

  function niceTicks(lo, hi, n) {
    const span = hi - lo || Math.abs(hi) || 1;
    const raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= n) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  /** A line chart as an SVG element. series: [{points: [[x, y], ...], color, dash, width, dot, attrs}] (each
   *  becomes one <path> carrying attrs); log: a log10 y axis (points with y <= 0 or not finite are left out).
   *  The sections' shared line chart (loss curves, schedules, gradient norms). */
  function lineChart({ series, xLabel, yLabel, log, yMin, yMax, width, height, label }) {
    const W = width || 560, H = height || 260, m = { l: 58, r: 12, t: 10, b: 38 };
    const ok = (p) => Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!log || p[1] > 0);
    const all = series.flatMap((s) => s.points.filter(ok));
    const chart = svg("svg", { class: "lab-chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label || yLabel,
                               style: `width: 100%; max-width: ${W + 60}px; height: auto; display: block` });
    if (!all.length) {
      chart.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "nothing to draw yet"));
      return chart;
    }
    const ty = (v) => (log ? Math.log10(v) : v);
    let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
    let y0 = yMin !== undefined ? ty(yMin) : Math.min(...all.map((p) => ty(p[1])));
    let y1 = yMax !== undefined ? ty(yMax) : Math.max(...all.map((p) => ty(p[1])));
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= log ? 1 : Math.abs(y0) * 0.1 || 1; y1 += log ? 1 : Math.abs(y1) * 0.1 || 1; }
    if (!log && yMin === undefined) { const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad; }
    const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const Y = (v) => H - m.b - ((ty(v) - y0) / (y1 - y0)) * (H - m.t - m.b);
    const Yl = (l) => H - m.b - ((l - y0) / (y1 - y0)) * (H - m.t - m.b);
    // axes, grid and ticks
    let yt;
    if (log) {
      const lo = Math.ceil(y0), hi = Math.floor(y1), every = Math.max(1, Math.ceil((hi - lo + 1) / 7));
      yt = [];
      for (let k = lo; k <= hi; k += every) yt.push(k);
      if (!yt.length) yt = [y0, y1];
    } else yt = niceTicks(y0, y1, 5);
    for (const k of yt) {
      const yy = Yl(k);
      chart.append(svg("line", { stroke: "#ececf0", x1: m.l, x2: W - m.r, y1: yy, y2: yy }),
        svg("text", { x: m.l - 5, y: yy + 4, "text-anchor": "end" }, log ? (Number.isInteger(k) ? `1e${k}` : tickFmt(Math.pow(10, k))) : tickFmt(k)));
    }
    for (const v of niceTicks(x0, x1, 6)) {
      chart.append(svg("text", { x: X(v), y: H - m.b + 14, "text-anchor": "middle" }, tickFmt(v)));
    }
    chart.append(svg("path", { class: "axis", d: `M${m.l} ${m.t} L${m.l} ${H - m.b} L${W - m.r} ${H - m.b}` }),
      svg("text", { x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle" }, xLabel),
      svg("text", { x: 12, y: (m.t + H - m.b) / 2, transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`, "text-anchor": "middle" }, yLabel));
    for (const s of series) {
      const pts = s.points.filter(ok);
      if (!pts.length) continue;
      const d = pts.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(2)} ${Y(p[1]).toFixed(2)}`).join(" ");
      chart.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 2,
                                 "stroke-dasharray": s.dash ? "5 4" : null, opacity: s.opacity || null, ...(s.attrs || {}) }));
      if (s.dot) for (const p of pts) chart.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: s.color }));
    }
    return chart;
  }

  window.Lab = { register, api, whenReady, h, svg, colorScale, legend, lineChart, visible, models, onModels, setOptions, showError, show,
                 sections: SECTIONS.map(([id]) => id), token: TOKEN };
  document.addEventListener("DOMContentLoaded", start);
})();

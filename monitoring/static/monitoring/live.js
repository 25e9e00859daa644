// Live figures (/admin/live/): polls the cumulative snapshot, derives rates from the
// change between consecutive snapshots and draws one SVG sparkline per figure.
// Every derived figure (rates, ratios, the p95 interpolation) is computed here only.
"use strict";

(function () {
  const root = document.querySelector(".live[data-figures-url]");
  if (!root) return;
  const url = root.dataset.figuresUrl;
  const pollMs = Number(root.dataset.pollMs) || 5000;
  const keep = Number(root.dataset.history) || 60;
  const text = root.dataset;
  const status = root.querySelector(".live-status");
  const series = {}; // name -> array of numbers or null (a gap), oldest first
  let previous = null;

  // Prometheus-style histogram_quantile over cumulative [le, count] pairs (le null = +Inf):
  // linear interpolation inside the bucket holding the rank; beyond the last finite bound,
  // that bound. Returns seconds, or null without observations.
  function quantile(q, buckets) {
    if (!buckets.length) return null;
    const total = buckets[buckets.length - 1][1];
    if (!(total > 0)) return null;
    const rank = q * total;
    let lower = 0;
    let below = 0;
    for (const [le, count] of buckets) {
      if (count >= rank) {
        if (le === null) return lower;
        if (count === below) return le;
        return lower + ((le - lower) * (rank - below)) / (count - below);
      }
      if (le !== null) lower = le;
      below = count;
    }
    return lower;
  }

  function bucketDelta(now, before) {
    const old = new Map(before.map(([le, count]) => [le, count]));
    return now.map(([le, count]) => [le, count - (old.get(le) || 0)]);
  }

  // Rates need two snapshots of the same server with counters that did not go back
  // (a worker restart resets them): otherwise the point is a gap.
  function derive(now, before) {
    const healthy = now.endpoints.filter((e) => e.enabled && e.healthy === true).length;
    const point = { queue: now.queue_depth.total, healthy: healthy, rps: null, errors: null, cache: null, p95: null };
    if (!before || before.instance !== now.instance) return point;
    const dt = now.timestamp - before.timestamp;
    const requests = now.requests.total - before.requests.total;
    if (dt <= 0 || requests < 0) return point;
    point.rps = requests / dt;
    const fivexx = (now.requests.by_status["5xx"] || 0) - (before.requests.by_status["5xx"] || 0);
    // Failures inside streams that went out as 200, and websocket answers (as the HighErrorRate alert counts them).
    const streamed = (now.streams?.errors_5xx || 0) - (before.streams?.errors_5xx || 0);
    const answers = requests + (now.streams?.websocket_answers || 0) - (before.streams?.websocket_answers || 0);
    point.errors = answers > 0 ? (100 * (fivexx + streamed)) / answers : null;
    const hits = now.cache.hit - before.cache.hit;
    const lookups = hits + (now.cache.miss - before.cache.miss);
    point.cache = lookups > 0 ? (100 * hits) / lookups : null;
    const p95 = quantile(0.95, bucketDelta(now.latency.buckets, before.latency.buckets));
    point.p95 = p95 === null ? null : p95 * 1000;
    return point;
  }

  function format(value, digits) {
    return value === null || value === undefined ? "–" : value.toFixed(digits);
  }

  function withUnit(value, digits, unit) {
    return `${format(value, digits)} ${unit}`.trim();
  }

  function draw(figure, values) {
    const svg = figure.querySelector("svg");
    const digits = Number(figure.dataset.digits);
    const unit = figure.dataset.unit;
    const known = values.filter((v) => v !== null);
    const last = values.length ? values[values.length - 1] : null;
    const output = figure.querySelector(".live-value");
    output.textContent = last === null ? (known.length ? "–" : text.textNoData) : withUnit(last, digits, unit);
    figure.classList.toggle("warn", figure.dataset.warn !== undefined && last !== null && last >= Number(figure.dataset.warn));
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const title = figure.querySelector("figcaption").textContent;
    if (!known.length) {
      svg.setAttribute("aria-label", `${title}: ${text.textNoData}`);
      return;
    }
    const max = Math.max(...known);
    const min = Math.min(...known);
    svg.setAttribute(
      "aria-label",
      `${title}: ${withUnit(last, digits, unit)}; ${text.textRange} ${format(min, digits)}, ${text.textMax} ${format(max, digits)}`,
    );
    // Zero-based scale so small changes do not look dramatic; a gap splits the line.
    const top = max > 0 ? max * 1.1 : 1;
    const step = 240 / Math.max(keep - 1, 1);
    const offset = keep - values.length;
    let points = [];
    const flush = () => {
      if (points.length) {
        const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
        line.setAttribute("points", points.join(" "));
        svg.appendChild(line);
      }
      points = [];
    };
    values.forEach((v, i) => {
      if (v === null) return flush();
      const x = (offset + i) * step;
      const y = 58 - (Math.max(v, 0) / top) * 56;
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
      if (points.length === 1 && (i === values.length - 1 || values[i + 1] === null)) {
        points.push(`${(x + 1).toFixed(1)},${y.toFixed(1)}`); // a lone point stays visible
      }
    });
    flush();
  }

  function cell(row, value, className) {
    const td = row.insertCell();
    td.textContent = value;
    if (className) td.className = className;
    return td;
  }

  function yesNo(value) {
    return value === true ? text.textYes : value === false ? text.textNo : text.textUnknown;
  }

  function table(snapshot) {
    const body = root.querySelector("#live-endpoints tbody");
    const rows = document.createDocumentFragment();
    for (const e of snapshot.endpoints) {
      const tr = document.createElement("tr");
      cell(tr, e.name);
      cell(tr, e.kind);
      cell(tr, yesNo(e.enabled));
      cell(tr, yesNo(e.healthy), e.enabled && e.healthy === false ? "bad" : "");
      cell(tr, format(e.last_latency_ms, 0));
      cell(tr, format(snapshot.queue_depth.by_endpoint[e.name] ?? null, 0));
      cell(tr, e.last_check_at ? new Date(e.last_check_at).toLocaleString() : "–");
      cell(tr, e.last_error || "", "err");
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
  }

  // Per model group, over the last interval: requests/s, completion tokens/s, TTFT p50/p95.
  function modelTable(now, before) {
    const body = root.querySelector("#live-models tbody");
    if (!body) return;
    const rows = document.createDocumentFragment();
    const same = before && before.instance === now.instance;
    const dt = same ? now.timestamp - before.timestamp : 0;
    for (const name of Object.keys(now.models || {}).sort()) {
      const m = now.models[name];
      const b = same ? (before.models || {})[name] : null;
      const delta = (key) => (b && dt > 0 && m[key] >= b[key] ? (m[key] - b[key]) / dt : null);
      const ttft = b ? bucketDelta(m.ttft, b.ttft) : [];
      const p50 = quantile(0.5, ttft);
      const p95 = quantile(0.95, ttft);
      const tr = document.createElement("tr");
      cell(tr, name);
      cell(tr, format(delta("requests"), 2));
      cell(tr, format(delta("completion_tokens"), 1));
      cell(tr, format(p50 === null ? null : p50 * 1000, 0));
      cell(tr, format(p95 === null ? null : p95 * 1000, 0));
      cell(tr, format(m.requests, 0));
      cell(tr, format(m.errors, 0), m.errors > 0 ? "bad" : "");
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
  }

  async function poll() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(String(response.status));
      const now = await response.json();
      const point = derive(now, previous);
      modelTable(now, previous);
      previous = now;
      for (const figure of root.querySelectorAll(".live-chart")) {
        const name = figure.dataset.series;
        const values = (series[name] = series[name] || []);
        values.push(point[name] ?? null);
        if (values.length > keep) values.shift();
        draw(figure, values);
      }
      table(now);
      status.textContent = "";
    } catch (error) {
      status.textContent = text.textError;
      previous = null; // the next delta would span the outage: start over
    } finally {
      setTimeout(poll, pollMs);
    }
  }

  poll();
})();

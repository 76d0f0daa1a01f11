/* neurowire live dashboard: one EventSource, fixed-size arrays, DOM built once. */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const STAGES = ["ingest", "compress", "publish", "received", "decoded"];
  const COLORS = { ingest: "#1f77b4", compress: "#ff7f0e", publish: "#2ca02c",
    received: "#9467bd", decoded: "#d62728", noise: "#8a8f98" };
  const LABELS = { ingest: "ingest (acq → daemon)", compress: "compress",
    publish: "publish (acq → sent)", received: "received (acq → tap)",
    decoded: "decoded (acq → decoded)", noise: "noise floor" };

  let histLen = 600;
  let edges = [];
  let es = null;
  let ticks = 0;
  let selected = decodeURIComponent(location.hash.slice(1)) || null;
  let lastStreamsKey = "";
  let dirty = false;

  // ---- formatting ----------------------------------------------------------------
  function fmtUs(v) {
    if (v == null || !isFinite(v)) return "–";
    if (v < 1000) return v.toFixed(v < 10 ? 1 : 0) + " µs";
    if (v < 1e6) return (v / 1000).toFixed(v < 1e4 ? 2 : 1) + " ms";
    return (v / 1e6).toFixed(2) + " s";
  }
  const fmtNum = (v, d = 0) => (v == null || !isFinite(v)) ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
  function fmtBytes(b) {
    if (b == null) return "–";
    const u = ["B", "kB", "MB", "GB", "TB"]; let i = 0;
    while (b >= 1000 && i < u.length - 1) { b /= 1000; i++; }
    return b.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function fmtDur(s) {
    if (s == null) return "–";
    if (s < 60) return s.toFixed(0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  // Axis ticks are decades or their multiples: no decimals needed there.
  function fmtAxisUs(v) {
    if (v == null) return "";
    if (v < 1000) return +v.toPrecision(3) + " µs";
    if (v < 1e6) return +(v / 1000).toPrecision(3) + " ms";
    return +(v / 1e6).toPrecision(3) + " s";
  }
  const pos = (v) => (v == null || !(v > 0)) ? null : v;  // log scales cannot show 0

  // ---- charts --------------------------------------------------------------------
  function logRange(u, min, max) {
    if (min == null || max == null || !(min > 0)) return [10, 10000];
    return uPlot.rangeLog(min, max, 10, true);
  }
  function chartWidth(el) { return Math.max(200, el.clientWidth || 300); }

  function makeChart(el, series, opts = {}) {
    const o = Object.assign({
      width: chartWidth(el), height: opts.height || 200,
      series: [{}].concat(series),
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [{}, {}],
    }, opts.uplot || {});
    const data = [[]].concat(series.map(() => []));
    const u = new uPlot(o, data, el);
    u._nwData = data;
    new ResizeObserver(() => u.setSize({ width: chartWidth(el), height: o.height })).observe(el);
    return u;
  }

  function latChart(el) {
    const series = STAGES.concat(["noise"]).map((s) => ({
      label: s === "noise" ? "noise floor" : s, stroke: COLORS[s], width: s === "noise" ? 1.5 : 1.5,
      dash: s === "noise" ? [4, 3] : undefined, spanGaps: false,
    }));
    return makeChart(el, series, { uplot: {
      scales: { x: { time: true }, y: { distr: 3, log: 10, range: logRange } },
      axes: [{}, { values: (u, vals) => vals.map(fmtAxisUs), size: 58 }],
    } });
  }

  const charts = {
    p50: latChart($("c-p50")), p99: latChart($("c-p99")), max: latChart($("c-max")),
    tput: makeChart($("c-tput"), [
      { label: "in", stroke: "#1f77b4", width: 1.5, fill: "rgba(31,119,180,.08)" },
      { label: "out", stroke: "#2ca02c", width: 1.5, fill: "rgba(44,160,44,.08)" }],
      { uplot: { scales: { x: { time: true }, y: { range: (u, a, b) => [0, Math.max(1, (b || 1) * 1.1)] } },
        axes: [{}, { size: 50 }] } }),
    ratio: makeChart($("c-ratio"), [
      { label: "overall", stroke: "#1d232b", width: 1.5 },
      { label: "last second", stroke: "#ef6c00", width: 1 }],
      { uplot: { axes: [{}, { size: 55, values: (u, vals, ax, space, incr) =>
        vals.map((v) => v.toFixed(Math.max(1, -Math.floor(Math.log10(incr))))) }] } }),
  };
  const TIMESERIES = ["p50", "p99", "max", "tput", "ratio"];

  function histChart(el) {
    const series = ["received", "decoded", "noise"].map((s) => ({
      label: LABELS[s], stroke: COLORS[s], width: 1.5, fill: COLORS[s] + "22",
      paths: uPlot.paths.stepped({ align: 1 }), points: { show: false }, points: { show: false },
    }));
    return makeChart(el, series, { uplot: {
      scales: { x: { time: false }, y: { range: (u, a, b) => [0, Math.max(5, (b || 0) * 1.1)] } },
      axes: [{ values: (u, vals) => vals.map((v) => fmtAxisUs(Math.pow(10, v))), space: 50 },
        { size: 40, values: (u, vals) => vals.map((v) => v + "%") }],
    } });
  }
  charts.hist = histChart($("c-hist"));
  const DAEMON_STAGES = ["ingest", "compress", "publish"];
  charts.stagehist = makeChart($("c-stagehist"), DAEMON_STAGES.map((s) => ({
    label: LABELS[s], stroke: COLORS[s], width: 1.5, fill: COLORS[s] + "22",
    paths: uPlot.paths.stepped({ align: 1 }), points: { show: false },
  })), { uplot: {
    scales: { x: { time: false }, y: { range: (u, a, b) => [0, Math.max(5, (b || 0) * 1.1)] } },
    axes: [{ values: (u, vals) => vals.map((v) => fmtAxisUs(Math.pow(10, v))), space: 50 },
      { size: 40, values: (u, vals) => vals.map((v) => v + "%") }],
  } });

  // The daemon's buckets are uneven (10, 20, 50, 100 ... µs); each is drawn over its own
  // span on the log axis, the open-ended ones over an arbitrary third of a decade.
  function setStageHist(sh, metricsState) {
    const d = charts.stagehist._nwData;
    if (!sh || !sh.bounds_us || !sh.bounds_us.length) {
      d[0] = []; for (let i = 1; i < d.length; i++) d[i] = [];
      setText("stage-hist-hint", metricsState && metricsState !== "ok"
        ? `daemon /metrics ${metricsState}` : "Prometheus buckets, last 10 s, share per bucket");
      return;
    }
    const ub = sh.bounds_us.map((b, i) => b == null ? Math.pow(10, Math.log10(sh.bounds_us[i - 1]) + 0.33) : b);
    const lo = [Math.log10(ub[0]) - 0.33].concat(ub.slice(0, -1).map((b) => Math.log10(b)));
    d[0] = lo.concat([Math.log10(ub[ub.length - 1])]);
    DAEMON_STAGES.forEach((st, i) => {
      const c = sh.stages[st];
      if (!c) { d[i + 1] = d[0].map(() => null); return; }
      const tot = c.reduce((a, b) => a + b, 0) || 1;
      const pct = c.map((x) => 100 * x / tot);
      d[i + 1] = pct.concat([pct[pct.length - 1]]);
    });
    setText("stage-hist-hint", `Prometheus buckets, last ${sh.span_s.toFixed(0)} s, share per bucket`);
  }

  function resetSeries() {
    for (const k of TIMESERIES) for (const arr of charts[k]._nwData) arr.length = 0;
  }

  function push(arr, v) { arr.push(v); if (arr.length > histLen) arr.splice(0, arr.length - histLen); }

  function pushTick(rec) {
    if (!rec || rec.t == null) return;
    const last = charts.p50._nwData[0];
    if (last.length && rec.t <= last[last.length - 1]) return;  // a tick seen twice
    ["p50", "p99", "max"].forEach((stat, i) => {
      const d = charts[stat]._nwData;
      push(d[0], rec.t);
      STAGES.forEach((st, j) => push(d[j + 1], pos(((rec.lat || {})[st] || [])[i])));
      push(d[STAGES.length + 1], pos((rec.noise || [])[i]));
    });
    let d = charts.tput._nwData;
    push(d[0], rec.t); push(d[1], rec.mbps_in ?? null); push(d[2], rec.mbps_out ?? null);
    d = charts.ratio._nwData;
    push(d[0], rec.t); push(d[1], rec.ratio ?? null); push(d[2], rec.ratio_now ?? null);
    dirty = true;
  }

  function setHist(h) {
    if (!edges.length) return;
    const lo = [Math.log10(edges[0]) - 0.1].concat(edges.map((e) => Math.log10(e)));
    const xs = lo.concat([lo[lo.length - 1] + 0.1]);
    const d = charts.hist._nwData;
    d[0] = xs;
    ["received", "decoded", "noise"].forEach((s, i) => {
      const c = (h || {})[s];
      if (!c) { d[i + 1] = xs.map(() => null); return; }
      const tot = c.reduce((a, b) => a + b, 0) || 1;
      const pct = c.map((x) => 100 * x / tot);
      d[i + 1] = pct.concat([pct[pct.length - 1]]);
    });
  }

  function redraw() {
    if (document.hidden || !dirty) return;
    for (const k of TIMESERIES.concat(["hist", "stagehist"])) charts[k].setData(charts[k]._nwData);
    dirty = false;
  }
  document.addEventListener("visibilitychange", redraw);

  // ---- latency table ---------------------------------------------------------------
  const latRows = {};
  (function buildLatTable() {
    const tb = $("lat-table").tBodies[0];
    for (const s of STAGES.concat(["decode", "noise"])) {
      const tr = tb.insertRow();
      if (s === "noise") tr.className = "noise";
      const name = s === "decode" ? "decoder alone" : LABELS[s];
      const color = COLORS[s] || "#bbb";
      tr.insertCell().innerHTML = `<span class="sw" style="background:${color}"></span>${name}`;
      latRows[s] = [tr.insertCell(), tr.insertCell(), tr.insertCell(), tr.insertCell()];
    }
  })();
  function setLatRow(s, summ) {
    const c = latRows[s];
    c[0].textContent = fmtUs(summ && summ.p50);
    c[1].textContent = fmtUs(summ && summ.p99);
    c[2].textContent = fmtUs(summ && summ.max);
    c[3].textContent = summ && summ.count != null ? fmtNum(summ.count) : "–";
  }

  // ---- channel map -----------------------------------------------------------------
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function viridis(t) {
    t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
    const a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return `rgb(${Math.round(a[0] + f * (b[0] - a[0]))},${Math.round(a[1] + f * (b[1] - a[1]))},${Math.round(a[2] + f * (b[2] - a[2]))})`;
  }
  let cells = [], cellColor = [], chanValues = [];
  function ensureCells(n) {
    if (cells.length === n) return;
    const map = $("chanmap");
    const cols = Math.max(1, Math.ceil(Math.sqrt(n)));
    map.style.gridTemplateColumns = `repeat(${cols}, 1fr)`;
    const frag = document.createDocumentFragment();
    cells = []; cellColor = [];
    for (let i = 0; i < n; i++) {
      const c = document.createElement("div");
      c.className = "cell"; c.dataset.ch = i;
      frag.appendChild(c); cells.push(c); cellColor.push("");
    }
    map.replaceChildren(frag);  // replaced, never appended: the DOM stays the same size
    $("chan-shape").textContent = `${n} channels, ${cols} × ${Math.ceil(n / cols)}`;
  }
  function setChanMap(vals) {
    if (!vals || !vals.length) return;
    ensureCells(vals.length);
    chanValues = vals;
    let lo = Infinity, hi = -Infinity;
    for (const v of vals) { if (v > 0) { if (v < lo) lo = v; if (v > hi) hi = v; } }
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    const span = hi - lo || 1;
    for (let i = 0; i < vals.length; i++) {
      const col = vals[i] > 0 ? viridis((vals[i] - lo) / span) : "#ddd";
      if (col !== cellColor[i]) { cells[i].style.background = col; cellColor[i] = col; }
    }
    $("chan-min").textContent = lo.toFixed(2);
    $("chan-max").textContent = hi.toFixed(2);
  }
  $("chanmap").addEventListener("mouseover", (e) => {
    const ch = e.target.dataset && e.target.dataset.ch;
    if (ch == null) return;
    const v = chanValues[ch];
    $("chan-info").textContent = `channel ${ch}: ratio ${v ? v.toFixed(3) : "–"}`;
  });

  // ---- status, streams, tiles -----------------------------------------------------
  function setStatus(d, proc) {
    const state = d.up ? "up" : "down";
    document.body.dataset.state = state;
    const pill = $("daemon-status");
    pill.dataset.state = state;
    pill.textContent = d.up ? "daemon up" : "daemon unreachable";
    $("down-banner").hidden = d.up;
    if (!d.up) {
      const since = d.down_since ? (Date.now() / 1000 - d.down_since) : null;
      $("down-text").textContent = `at ${d.endpoint} for ${fmtDur(since)} (${d.error || "no reply"}); ` +
        `last reply ${d.last_ok ? new Date(d.last_ok * 1000).toLocaleTimeString() : "never"}.`;
    }
    $("daemon-meta").textContent = d.up
      ? `${d.endpoint} · v${d.version ?? "?"} · up ${fmtDur(d.uptime_s)} · rtt ${d.rtt_ms != null ? d.rtt_ms.toFixed(1) : "–"} ms` +
        (proc && proc.cpu_pct != null ? ` · CPU ${proc.cpu_pct.toFixed(0)}%` : "") +
        (d.age_s != null && d.age_s > 1 ? ` · slow: last reply ${d.age_s.toFixed(1)} s ago` : "")
      : d.endpoint;
  }

  function setStreams(list, current) {
    const key = list.map((s) => s.id).join("\u0000") + "\u0001" + current;
    if (key === lastStreamsKey) return;
    lastStreamsKey = key;
    const sel = $("stream-select");
    const opts = list.map((s) => {
      const o = document.createElement("option");
      o.value = s.id;
      o.textContent = s.channels ? `${s.id} (${s.channels} ch @ ${fmtNum(s.rate / 1000, 0)} kHz)` : s.id;
      return o;
    });
    if (current != null && !list.some((s) => s.id === current)) {
      const o = document.createElement("option");
      o.value = current; o.textContent = `${current} (gone)`; opts.push(o);
    }
    sel.replaceChildren(...opts);
    if (current != null) sel.value = current;
  }
  $("stream-select").addEventListener("change", (e) => {
    selected = e.target.value;
    location.hash = encodeURIComponent(selected);
    connect();
  });

  function setText(id, t) { const el = $(id); if (el.textContent !== t) el.textContent = t; }

  function setTiles(p) {
    const s = p.s, tap = p.tap || {};
    const lat = (tap.latency) || {};
    const e2e = lat.decoded || lat.received;
    const noise = p.tick && p.tick.noise;
    setText("v-noise", noise ? fmtUs(noise[0]) : "–");
    setText("v-noise-max", noise ? `p99 ${fmtUs(noise[1])} · max ${fmtUs(noise[2])}` : "–");
    setText("v-e2e", e2e ? fmtUs(e2e.p50) : "–");
    setText("v-e2e-max", e2e ? `p99 ${fmtUs(e2e.p99)} · max ${fmtUs(e2e.max)}` : (tap.state || "–"));
    $("v-e2e").title = lat.decoded ? "acquired → decoded by the dashboard's subscriber"
      : "acquired → received by the dashboard's subscriber (no decode yet)";
    if (!s) return;  // daemon down or no stream: keep the last figures, greyed out
    setText("v-ratio", s.ratio != null ? s.ratio.toFixed(3) : "–");
    setText("v-ratio-now", `last second ${s.ratio_now != null ? s.ratio_now.toFixed(3) : "–"}`);
    setText("v-mbps-in", s.mbps_in != null ? `${s.mbps_in.toFixed(1)} Mb/s` : "–");
    setText("v-pps", `${fmtNum(s.pps, 0)} packets/s · ${fmtNum(s.packets_in)} total`);
    setText("v-mbps-out", s.mbps_out != null ? `${s.mbps_out.toFixed(1)} Mb/s` : "–");
    setText("v-bytes-out", `${fmtBytes(s.bytes_out)} of ${fmtBytes(s.bytes_in)}`);
    setText("v-keyframes", fmtNum(s.keyframes));
    setText("v-keyframes-rate", `${fmtNum(s.keyframes_per_s, 2)} /s`);
    setText("v-subscribers", fmtNum(s.subscribers));

    setText("v-stream-shape", `${fmtNum(s.channels)} ch @ ${fmtNum((s.rate || 0) / 1000, 1)} kHz`);
    setText("v-drops", fmtNum(s.drops));
    const rej = p.rejected || {};
    const nrej = Object.values(rej).reduce((a, b) => a + b, 0);
    setText("v-rejected", `${fmtNum(s.drops_per_s, 1)} /s · ${fmtNum(nrej)} rejected msgs`);
  }

  function setSubs(p) {
    const tb = $("subs-table").tBodies[0];
    const rows = [];
    const tap = p.tap || {};
    if (tap.state === "running") {
      rows.push(["dashboard's own (live)", tap.messages, tap.lost_packets, tap.lost_samples, tap.gaps,
        (tap.recent_gaps || []).slice(-3).map((g) => `${g[0]}–${g[1] - 1}`).join(", ") || "none"]);
    }
    // Lossless subscribers are the ones the daemon itself can account for: what it had to
    // throw away past their hold limit is their loss. Live subscribers' losses happen in
    // libzmq and only they can see them (as the dashboard's own row above does).
    for (const sub of (p.lossless || []).slice(0, 16)) {
      rows.push([`lossless ${String(sub.id).slice(0, 8)}`, sub.sent, sub.overflow, "–",
        sub.overflow ? "≥1" : 0, `held ${fmtNum(sub.held)}, credit ${fmtNum(sub.credit)}`]);
    }
    while (tb.rows.length > rows.length) tb.deleteRow(-1);
    rows.forEach((r, i) => {
      const tr = tb.rows[i] || tb.insertRow();
      while (tr.cells.length < r.length) tr.insertCell();
      r.forEach((v, j) => { const t = typeof v === "number" ? fmtNum(v) : String(v); if (tr.cells[j].textContent !== t) tr.cells[j].textContent = t; });
    });
    let info = `dashboard subscriber: ${tap.state || "–"}`;
    if (tap.state === "running") {
      info += ` on ${tap.endpoint}; decoded ${fmtNum(tap.decoded_blocks)} blocks (duty-cycled after each keyframe), ` +
        `${fmtNum(tap.verified_blocks)} checked against the daemon's CRC` +
        (tap.mismatched_blocks ? ` — ${fmtNum(tap.mismatched_blocks)} DO NOT MATCH` : "") +
        (tap.decode_available ? "" : " — codec not available, decode latency not measured") +
        (tap.decode_errors ? `, ${fmtNum(tap.decode_errors)} decode errors` : "") +
        (tap.decode_skipped ? `; skipped decoding ${fmtNum(tap.decode_skipped)} blocks while more than 50 ms behind` : "");
    }
    setText("tap-info", info);
  }

  function fmtKbps(v) {
    if (v == null || !isFinite(v)) return "–";
    return v >= 10000 ? fmtNum(v / 1000, 1) + " Mbit/s" : fmtNum(v, 1) + " kbit/s";
  }

  // One row per feed (the lossless stream first, for scale); rows keep their cells so a tick
  // only rewrites text that changed.
  function setFeeds(p) {
    const tb = $("feeds-table").tBodies[0];
    const rows = (p.s && p.s.feeds) || [];
    const served = rows.length > 1;
    setText("feeds-link", `link ${fmtNum(p.link_mbps, 3)} Mbit/s`);
    setText("feeds-info", served
      ? "kbit/s: over the seconds of signal the daemon has processed; bar: share of the link (red: does not fit)"
      : "the daemon serves no feeds beyond lossless (config feeds = [\"spikes\", \"power\"])");
    while (tb.rows.length > rows.length) tb.deleteRow(-1);
    rows.forEach((r, i) => {
      const tr = tb.rows[i] || tb.insertRow();
      if (!tr.cells.length) {
        for (let j = 0; j < 9; j++) tr.insertCell();
        tr.cells[3].className = "of-link";
        tr.cells[4].className = "bar";
        tr.cells[4].innerHTML = '<div class="meter"><span></span></div>';
      }
      tr.dataset.feed = r.feed;
      tr.dataset.fits = r.fits == null ? "" : String(r.fits);
      const cells = [r.feed, fmtKbps(r.kbps), fmtKbps(r.kbps_now),
        r.of_link == null ? "–" : fmtNum(100 * r.of_link, r.of_link < 0.1 ? 2 : 1) + " %", null,
        fmtNum(r.messages), fmtNum(r.events), fmtNum(r.drops), fmtNum(r.subscribers)];
      cells.forEach((t, j) => { if (t != null && tr.cells[j].textContent !== t) tr.cells[j].textContent = t; });
      const width = r.of_link == null ? 0 : Math.min(100, 100 * r.of_link);
      tr.cells[4].firstChild.firstChild.style.width = width.toFixed(1) + "%";
    });
  }

  // ---- event stream ----------------------------------------------------------------
  function onHello(h) {
    histLen = h.history_len || histLen;
    edges = h.edges_us || [];
    resetSeries();
    for (const rec of h.history || []) pushTick(rec);
    dirty = true;
    redraw();
  }

  // Mean cost of one update over the last 64, so a slow-down over hours would show.
  let tickCost = 0;
  function onTick(p) {
    const t0 = performance.now();
    handleTick(p);
    tickCost += (performance.now() - t0 - tickCost) / 64;
    document.body.dataset.tickMs = tickCost.toFixed(3);
  }

  function handleTick(p) {
    ticks++;
    document.body.dataset.ticks = ticks;
    $("server-banner").hidden = true;
    setStatus(p.daemon, p.process);
    setStreams(p.streams || [], p.stream);
    pushTick(p.tick);
    setTiles(p);
    const tl = (p.tap && p.tap.latency) || {};
    const dl = (p.s && p.s.latency) || {};
    for (const s of ["ingest", "compress", "publish"]) setLatRow(s, p.s ? dl[s] : null);
    setLatRow("received", tl.received); setLatRow("decoded", tl.decoded); setLatRow("decode", tl.decode);
    const n = p.tick && p.tick.noise;
    setLatRow("noise", n ? { p50: n[0], p99: n[1], max: n[2] } : null);
    setHist(p.hist);
    setStageHist(p.hist && p.hist.stages, p.hist && p.hist.metrics);
    if (p.s) setChanMap(p.s.channel_ratio);
    setSubs(p);
    setFeeds(p);
    setText("clock", new Date(p.t * 1000).toLocaleTimeString());
    // For tests and the curious: how many points the time charts hold, and the newest one.
    const xs = charts.p50._nwData[0];
    document.body.dataset.points = xs.length;
    document.body.dataset.lastT = xs.length ? xs[xs.length - 1] : "";
    dirty = true;
    redraw();
  }

  let retry = null;
  function connect() {
    if (es) es.close();
    clearTimeout(retry);
    lastStreamsKey = "";
    const url = "/events" + (selected ? "?stream=" + encodeURIComponent(selected) : "");
    es = new EventSource(url);
    es.addEventListener("hello", (e) => onHello(JSON.parse(e.data)));
    es.addEventListener("tick", (e) => onTick(JSON.parse(e.data)));
    es.onerror = () => {
      $("server-banner").hidden = false;
      document.body.dataset.state = "server-lost";
      // The browser retries by itself unless the server answered with an error.
      if (es.readyState === EventSource.CLOSED) retry = setTimeout(connect, 2000);
    };
  }
  connect();
})();

/**
 * The dashboard at `GET /`: one self-contained page (no CDN, no build) that
 * polls `/v1/moe/stats` and draws per-layer expert usage as a canvas
 * heatmap, plus throughput, queue and store counters. Data from the server
 * is only ever written with `textContent`, never parsed as HTML.
 *
 * @module
 */

/** The dashboard page; `statsPath` is the JSON endpoint it polls. */
export function dashboardHtml(statsPath = "/v1/moe/stats"): string {
  return PAGE.replace("__STATS_PATH__", JSON.stringify(statsPath));
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moe-edge</title>
<link rel="icon" href="data:,">
<style>
  :root { color-scheme: dark; --bg: #0f1115; --panel: #171a21; --fg: #e6e6e6; --dim: #8b93a1; --acc: #f5b342; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--fg); }
  header { display: flex; gap: 1rem; align-items: baseline; padding: .8rem 1.2rem; border-bottom: 1px solid #262b36; }
  header h1 { font-size: 1.1rem; margin: 0; }
  header .dim { color: var(--dim); }
  main { padding: 1rem 1.2rem; display: grid; gap: 1rem; }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .6rem; }
  .card { background: var(--panel); border-radius: 8px; padding: .6rem .8rem; }
  .card .k { color: var(--dim); font-size: .75rem; text-transform: uppercase; letter-spacing: .04em; }
  .card .v { font-size: 1.35rem; font-variant-numeric: tabular-nums; }
  section { background: var(--panel); border-radius: 8px; padding: .8rem; }
  section h2 { font-size: .9rem; margin: 0 0 .5rem; color: var(--dim); font-weight: 600; }
  canvas { width: 100%; display: block; }
  .row { display: flex; gap: .6rem; align-items: center; flex-wrap: wrap; }
  button, input { background: #232834; color: var(--fg); border: 1px solid #323948; border-radius: 6px; padding: .25rem .6rem; }
  button[aria-pressed="true"] { border-color: var(--acc); color: var(--acc); }
  #err { color: #ff7b72; }
  #auth { display: none; }
</style>
</head>
<body>
<header>
  <h1>moe-edge</h1>
  <span id="model" class="dim">connecting…</span>
  <span id="err" role="status"></span>
</header>
<main>
  <form id="auth" class="row" autocomplete="off">
    <label for="key">API key</label><input id="key" type="password" size="32"><button type="submit">Use key</button>
  </form>
  <div class="cards">
    <div class="card"><div class="k">tokens / s</div><div class="v" id="tps">–</div></div>
    <div class="card"><div class="k">generated tokens</div><div class="v" id="ctoks">–</div></div>
    <div class="card"><div class="k">prompt tokens</div><div class="v" id="ptoks">–</div></div>
    <div class="card"><div class="k">requests</div><div class="v" id="reqs">–</div></div>
    <div class="card"><div class="k">active / slots</div><div class="v" id="active">–</div></div>
    <div class="card"><div class="k">queued / capacity</div><div class="v" id="queued">–</div></div>
    <div class="card"><div class="k">mean TTFT</div><div class="v" id="ttft">–</div></div>
    <div class="card"><div class="k">store hits / misses</div><div class="v" id="hm">–</div></div>
  </div>
  <section>
    <h2>Throughput (tokens / s)</h2>
    <canvas id="tput" height="90"></canvas>
  </section>
  <section>
    <div class="row">
      <h2 style="margin:0">Expert usage per layer</h2>
      <button id="mode-total" aria-pressed="true">since start</button>
      <button id="mode-recent" aria-pressed="false">last interval</button>
      <span class="dim" id="legend"></span>
    </div>
    <canvas id="heatmap" height="240" data-routed="0" data-cells="0" data-rows="0" data-cols="0"></canvas>
  </section>
</main>
<script>
"use strict";
(() => {
  const STATS = __STATS_PATH__;
  const params = new URLSearchParams(location.search);
  const interval = Math.max(200, Number(params.get("interval")) || 1000);
  const $ = (id) => document.getElementById(id);
  const fmt = (n, d = 0) => Number(n).toLocaleString(undefined, { maximumFractionDigits: d, minimumFractionDigits: d });
  const tputHist = [];
  let prev = null, mode = "total", recent = null;
  window.__moeEdge = { stats: null, polls: 0 };

  function stops(t) {
    // dark blue → teal → yellow, like viridis
    const cs = [[20, 24, 48], [33, 102, 172], [42, 170, 142], [187, 223, 39], [253, 231, 37]];
    const x = Math.min(1, Math.max(0, t)) * (cs.length - 1);
    const i = Math.min(cs.length - 2, Math.floor(x)), f = x - i;
    const c = cs[i].map((a, k) => Math.round(a + (cs[i + 1][k] - a) * f));
    return "rgb(" + c.join(",") + ")";
  }

  function fit(canvas) {
    const r = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = Number(canvas.getAttribute("height"));
    if (canvas.width !== Math.round(w * r)) { canvas.width = Math.round(w * r); canvas.height = Math.round(h * r); }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(r, 0, 0, r, 0, 0);
    return [ctx, w, h];
  }

  function drawHeatmap(ex, rows) {
    const cv = $("heatmap");
    const layers = ex.moeLayers, nE = ex.nExpert;
    const cellH = Math.max(6, Math.min(28, Math.floor(480 / Math.max(1, layers.length))));
    cv.setAttribute("height", String(cellH * layers.length + 24));
    const [ctx, w, h] = fit(cv);
    ctx.fillStyle = "#171a21"; ctx.fillRect(0, 0, w, h);
    const left = 44, cellW = Math.max(1, (w - left) / Math.max(1, nE));
    let nonzero = 0;
    ctx.font = "11px system-ui"; ctx.textBaseline = "middle";
    layers.forEach((l, r) => {
      const row = rows[l] || [];
      let sum = 0, max = 0;
      for (const v of row) { sum += v; if (v > max) max = v; }
      ctx.fillStyle = "#8b93a1"; ctx.fillText("L" + l, 4, r * cellH + cellH / 2);
      for (let e = 0; e < nE; e++) {
        const v = row[e] || 0;
        if (v > 0) nonzero++;
        // colour by share of the layer's busiest expert, so every row uses the full scale
        ctx.fillStyle = v > 0 ? stops(v / max) : "#1d2130";
        ctx.fillRect(left + e * cellW, r * cellH, Math.max(1, cellW - 1), cellH - 1);
        if (v > 0 && cellW >= 44 && cellH >= 14) {
          // share of this layer's routed slots, in the cell
          ctx.fillStyle = v / max > 0.6 ? "#10131a" : "#e6e6e6";
          ctx.fillText((100 * v / sum).toFixed(1) + "%", left + e * cellW + 4, r * cellH + cellH / 2);
        }
      }
    });
    ctx.fillStyle = "#8b93a1";
    const step = Math.max(1, Math.ceil(24 / cellW));
    for (let e = 0; e < nE; e += step) ctx.fillText(String(e), left + e * cellW + 1, layers.length * cellH + 12);
    cv.dataset.routed = String(ex.routedTokens);
    cv.dataset.cells = String(nonzero);
    cv.dataset.rows = String(layers.length);
    cv.dataset.cols = String(nE);
    $("legend").textContent = ex.routedTokens ? fmt(ex.routedTokens) + " routed tokens, top-" + ex.nExpertUsed + " of " + nE : "no tokens routed yet";
  }

  function drawThroughput() {
    const [ctx, w, h] = fit($("tput"));
    ctx.fillStyle = "#171a21"; ctx.fillRect(0, 0, w, h);
    const max = Math.max(1, ...tputHist);
    ctx.strokeStyle = "#f5b342"; ctx.lineWidth = 2; ctx.beginPath();
    tputHist.forEach((v, i) => {
      const x = w - (tputHist.length - 1 - i) * (w / 119), y = h - 4 - (v / max) * (h - 16);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = "#8b93a1"; ctx.font = "11px system-ui"; ctx.fillText("max " + fmt(max, 1), 4, 12);
  }

  function render(s) {
    $("model").textContent = s.model + " · " + s.arch + " · " + s.backend + " · up " + fmt(s.uptimeS) + " s";
    $("tps").textContent = fmt(s.stats.tokensPerSecond, 1);
    $("ctoks").textContent = fmt(s.stats.completionTokens);
    $("ptoks").textContent = fmt(s.stats.promptTokens);
    $("reqs").textContent = fmt(s.requests);
    $("active").textContent = s.queue.active + " / " + s.queue.maxConcurrent;
    $("queued").textContent = s.queue.queued + " / " + s.queue.maxQueue;
    $("ttft").textContent = s.stats.ttft.count ? fmt(1000 * s.stats.ttft.sum / s.stats.ttft.count, 1) + " ms" : "–";
    const hits = s.experts.hits.reduce((a, b) => a + b, 0), misses = s.experts.misses.reduce((a, b) => a + b, 0);
    $("hm").textContent = fmt(hits) + " / " + fmt(misses);
    if (prev) {
      const d = s.experts.usage.map((row, l) => row.map((v, e) => v - ((prev.experts.usage[l] || [])[e] || 0)));
      if (d.some((row) => row.some((v) => v > 0))) recent = d;
    }
    tputHist.push(s.stats.tokensPerSecond);
    if (tputHist.length > 120) tputHist.shift();
    drawThroughput();
    drawHeatmap(s.experts, mode === "recent" && recent ? recent : s.experts.usage);
    prev = s;
  }

  async function poll() {
    const headers = {};
    const key = sessionStorage.getItem("moe-edge-key");
    if (key) headers.authorization = "Bearer " + key;
    try {
      const res = await fetch(STATS, { headers, cache: "no-store" });
      if (res.status === 401) { $("auth").style.display = "flex"; $("err").textContent = "API key required"; return; }
      if (!res.ok) throw new Error("HTTP " + res.status);
      const s = await res.json();
      window.__moeEdge.stats = s; window.__moeEdge.polls++;
      $("err").textContent = "";
      render(s);
    } catch (e) {
      $("err").textContent = "stats unavailable: " + e.message;
    } finally {
      setTimeout(poll, interval);
    }
  }

  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("moe-edge-key", $("key").value);
    $("auth").style.display = "none";
  });
  for (const m of ["total", "recent"]) {
    $("mode-" + m).addEventListener("click", () => {
      mode = m;
      $("mode-total").setAttribute("aria-pressed", String(m === "total"));
      $("mode-recent").setAttribute("aria-pressed", String(m === "recent"));
      if (prev) drawHeatmap(prev.experts, m === "recent" && recent ? recent : prev.experts.usage);
    });
  }
  poll();
})();
</script>
</body>
</html>
`;

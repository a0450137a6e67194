/**
 * The dashboard in a real headless Chromium: after a real generation the
 * heatmap shows per-layer expert usage, and it updates live. Saves a
 * screenshot to `.artifacts/dashboard.png`.
 *
 * Needs Debian's `chromium` (`apt-get install -y chromium`); set
 * `CHROMIUM_PATH` to use another binary.
 */

import assert from "node:assert/strict";
import { chromium } from "npm:playwright-core@1";
import { serve, tinyRuntime } from "../../serve/serve_test_util.ts";

const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";
const SHOT = new URL("../../.artifacts/dashboard.png", import.meta.url);

function requireChromium(): void {
  try {
    Deno.statSync(CHROMIUM);
  } catch {
    throw new Error(
      `Cannot run the dashboard test: no Chromium at ${CHROMIUM}. ` +
        "Install it with `apt-get update && apt-get install -y chromium` (Debian package 'chromium'), " +
        "or set CHROMIUM_PATH to a Chromium/Chrome binary.",
    );
  }
}

/** The few DOM shapes the page-side functions use (the test is type-checked without the DOM lib). */
interface PageGlobals {
  document: {
    getElementById(id: string): {
      dataset: Record<string, string>;
      textContent: string;
      width: number;
      height: number;
      getContext(
        kind: "2d",
      ): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } };
    };
  };
}

/** Runs in the browser: whether the heatmap has drawn at least `n` routed tokens. */
const routedAtLeast = (n: number): boolean => {
  const { document } = globalThis as unknown as PageGlobals;
  return Number(document.getElementById("heatmap").dataset.routed) >= n;
};

/** Runs in the browser: the heatmap's pixels and the cards. */
const inspect = () => {
  const { document } = globalThis as unknown as PageGlobals;
  const cv = document.getElementById("heatmap");
  const { data } = cv.getContext("2d").getImageData(0, 0, cv.width, cv.height);
  const colours = new Set<string>();
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) {
    colours.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
    // heat colours are bright in green or red; the background and empty cells are dark
    if (data[i + 1] > 90 || data[i] > 150) lit++;
  }
  return {
    rows: Number(cv.dataset.rows),
    cols: Number(cv.dataset.cols),
    cells: Number(cv.dataset.cells),
    routed: Number(cv.dataset.routed),
    colours: colours.size,
    lit,
    tps: document.getElementById("tps").textContent,
    ctoks: document.getElementById("ctoks").textContent,
  };
};

async function generate(url: string, prompt: string, n: number): Promise<void> {
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: n, ignore_eos: true }),
  });
  assert.equal(res.status, 200);
  await res.json();
}

Deno.test({
  name: "dashboard: the heatmap renders per-layer expert usage from a real generation, live",
  sanitizeResources: false, // the browser's pipes outlive the test by a tick
  sanitizeOps: false,
  async fn() {
    requireChromium();
    const rt = await tinyRuntime();
    const srv = serve(rt);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    });
    try {
      await generate(srv.url, "Once upon a time", 24);
      const routed = rt.experts.snapshot().routedTokens;
      assert.ok(routed > 0);

      const page = await browser.newPage({ viewport: { width: 1000, height: 760 } });
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
      await page.goto(`${srv.url}/?interval=200`);
      await page.waitForFunction(routedAtLeast, routed, { timeout: 10_000 });
      const info = await page.evaluate(inspect);
      assert.equal(info.rows, 2, "one heatmap row per MoE layer");
      assert.equal(info.cols, 4, "one column per expert");
      assert.ok(info.cells >= 4, `cells with usage: ${info.cells}`);
      assert.ok(info.colours >= 4, `distinct colours drawn: ${info.colours}`);
      assert.ok(info.lit > 500, `bright heat pixels: ${info.lit}`);
      assert.equal(info.ctoks, "24");
      assert.notEqual(info.tps, "–");

      // live: another generation shows up without reloading
      await generate(srv.url, "and then", 16);
      const after = rt.experts.snapshot().routedTokens;
      await page.waitForFunction(routedAtLeast, after, { timeout: 10_000 });
      await Deno.mkdir(new URL(".", SHOT), { recursive: true });
      await page.screenshot({ path: SHOT.pathname, fullPage: true });
      assert.ok(Deno.statSync(SHOT).size > 5_000);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await srv.close();
    }
  },
});

/**
 * Real-size bench: one model file (e.g. from `tools/synth.ts --preset …`),
 * moe-edge's WASM backend under one or more memory limits against llama.cpp
 * (1 thread, node-llama-cpp, bench/peers/llamacpp_bench.mjs) in the same run.
 * Every engine runs in a fresh process under `/usr/bin/time` for its peak RSS.
 *
 * ```sh
 * deno run -A bench/realsize.ts --model /tmp/olmoe.gguf --memory-mb none
 * deno run -A bench/realsize.ts --model /tmp/qwen3.gguf --memory-mb 2048,8192 --no-peer
 * deno run -A bench/realsize.ts --model /tmp/qwen3.gguf --memory-mb none --peer-cache q.json
 * ```
 *
 * `--peer-variant V` pins llama.cpp's CPU kernels (`haswell`, the portable
 * AVX2 build the conformance oracle uses; default `auto`, ggml's own choice).
 * `--peer-cache FILE` reuses llama.cpp's result stored there (its tokens,
 * timings and RSS) or stores it after running it, so a second run against
 * a large file need not map it again; `--threads N` passes to `loadModel`.
 *
 * Columns: load (open → ready), first token (load + prompt), decode tok/s
 * (teacher-forced on llama.cpp's greedy tokens when the peer ran, else
 * free-running greedy), agreement (moe-edge's argmax = llama.cpp's greedy
 * token, per step), peak RSS (and vs the file size / the limit).
 *
 * @module
 */

import { loadModel } from "../core/model/model.ts";
import { describePlan } from "../core/model/memory_plan.ts";
import { Session } from "../core/generate/session.ts";
import { argmax } from "../core/generate/sampler.ts";
import "../wasm/register.ts";

const PROMPT = [5, 77, 120, 9, 33, 250, 17];

interface ChildRequest {
  model: string;
  memoryMb: number | null;
  nCtx?: number;
  steps: number;
  forced: number[] | null;
  threads?: number;
}

interface ChildResult {
  loadMs: number;
  firstTokenMs: number;
  decodeTokS: number;
  tokens: number[];
  agree: number | null;
  plan: string;
  misses: number;
  bytesFetched: number;
  instances: number;
}

/** The measured process: load, prompt, `steps` decode steps. */
async function child(req: ChildRequest): Promise<ChildResult> {
  const t0 = performance.now();
  const model = await loadModel(req.model, {
    backend: "wasm",
    memoryBytes: req.memoryMb === null ? undefined : req.memoryMb * 1024 * 1024,
    nCtx: req.nCtx,
    threads: req.threads ?? 1,
  });
  const instances = (model.backend as { instanceCount?: number }).instanceCount ?? 1;
  const loadMs = performance.now() - t0;
  const s = new Session(model);
  let logits = await s.eval(PROMPT);
  const firstTokenMs = performance.now() - t0;
  const tokens: number[] = [argmax(logits)];
  let agree = req.forced ? (tokens[0] === req.forced[0] ? 1 : 0) : null;
  const t1 = performance.now();
  for (let i = 1; i < req.steps; i++) {
    const feed = req.forced ? req.forced[i - 1] : tokens[i - 1];
    logits = await s.eval([feed]);
    tokens.push(argmax(logits));
    if (req.forced && agree !== null && tokens[i] === req.forced[i]) agree++;
  }
  const decodeTokS = (req.steps - 1) / ((performance.now() - t1) / 1000);
  const st = model.store.stats();
  const plan = model.memoryPlan ? describePlan(model.memoryPlan) : "(no plan)";
  model.dispose();
  return {
    loadMs,
    firstTokenMs,
    decodeTokS,
    tokens,
    agree,
    plan,
    misses: st.misses,
    bytesFetched: st.bytesFetched,
    instances,
  };
}

/** Run `cmd` under /usr/bin/time; returns stdout's last JSON line and the peak RSS in bytes. */
async function timed(cmd: string[]): Promise<{ json: Record<string, unknown>; rss: number }> {
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "MAXRSS %M", ...cmd],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  const stderr = new TextDecoder().decode(out.stderr);
  const rss = Number(/MAXRSS (\d+)/.exec(stderr)?.[1] ?? NaN) * 1024;
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(stdout);
  } catch {
    // the last non-empty lines say why (an exception, or a signal such as the OOM killer's)
    const tail = `${stdout}\n${stderr}`.split("\n").filter((l) => l.trim() !== "").slice(-3);
    json = { error: `exit ${out.code}: ${tail.join(" / ")}` };
  }
  return { json, rss };
}

function gb(n: number): string {
  return (n / 1e9).toFixed(2);
}

async function main(): Promise<void> {
  const args = Deno.args;
  if (args[0] === "--child") {
    console.log(JSON.stringify(await child(JSON.parse(args[1]))));
    return;
  }
  const get = (k: string) => {
    const i = args.indexOf(k);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const model = get("--model");
  if (!model) {
    throw new Error(
      "usage: bench/realsize.ts --model FILE [--memory-mb none,2048] [--steps 16] [--ctx N] [--no-peer] [--peer-variant auto|haswell] [--peer-cache F]",
    );
  }
  const steps = Number(get("--steps") ?? 16);
  const nCtx = get("--ctx") === undefined ? undefined : Number(get("--ctx"));
  const limits = (get("--memory-mb") ?? "none").split(",").map((s) =>
    s === "none" ? null : Number(s)
  );
  const size = (await Deno.stat(model)).size;
  const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
  console.log(`model ${model} (${gb(size)} GB); CPU: ${navigator.hardwareConcurrency} × ${cpu}`);
  const load = () => Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
  console.log(`start ${new Date().toISOString()}, load average ${load()}`);

  const rows: string[] = [];
  let forced: number[] | null = null;
  const threads = get("--threads") === undefined ? undefined : Number(get("--threads"));
  const cacheFile = get("--peer-cache");
  if (!args.includes("--no-peer")) {
    const cpuVariant = get("--peer-variant") ?? "auto";
    const req = { model, prompt: PROMPT, decode: steps - 1, banned: [], threads: 1, cpuVariant };
    let r: { json: Record<string, unknown>; rss: number } | null = null;
    let cached = false;
    if (cacheFile !== undefined) {
      try {
        const c = JSON.parse(await Deno.readTextFile(cacheFile));
        if (c.model === model && c.steps === steps && (c.cpuVariant ?? "auto") === cpuVariant) {
          r = { json: c.json, rss: c.rss };
          cached = true;
        }
      } catch { /* no cache yet */ }
    }
    if (r === null) {
      r = await timed(["node", "bench/peers/llamacpp_bench.mjs", JSON.stringify(req)]);
      if (cacheFile !== undefined && !r.json.error) {
        await Deno.writeTextFile(
          cacheFile,
          JSON.stringify({
            model,
            steps,
            cpuVariant,
            at: new Date().toISOString(),
            json: r.json,
            rss: r.rss,
          }),
        );
      }
    }
    if (cached) console.log(`llama.cpp result from ${cacheFile} (not re-run)`);
    if (r.json.error) console.error(`llama.cpp failed: ${r.json.error}`);
    else {
      forced = r.json.tokens as number[];
      console.log(
        `llama.cpp tokens (CPU variant ${r.json.cpuVariant ?? cpuVariant}): ${forced.join(",")}`,
      );
      const load = r.json.loadMs as number;
      const first = load + (r.json.prefillMs as number);
      const tokS = (steps - 1) / ((r.json.decodeMs as number) / 1000);
      rows.push(
        `| llama.cpp (1 thread, mmap) | — | ${load.toFixed(0)} | ${first.toFixed(0)} | ${
          tokS.toFixed(2)
        } | — | ${gb(r.rss)} (${(r.rss / size).toFixed(2)}× file) | greedy reference |`,
      );
    }
  }
  const seen: string[] = [];
  for (const mb of limits) {
    const req: ChildRequest = { model, memoryMb: mb, nCtx, steps, forced, threads };
    const r = await timed([
      Deno.execPath(),
      "run",
      "-A",
      "bench/realsize.ts",
      "--child",
      JSON.stringify(req),
    ]);
    if (r.json.error) {
      rows.push(
        `| moe-edge wasm | ${mb ?? "none"} | failed: ${
          String(r.json.error).split("\n")[0]
        } | | | | | |`,
      );
      continue;
    }
    const j = r.json as unknown as ChildResult;
    seen.push(j.tokens.join(","));
    console.log(`moe-edge tokens at --memory-mb ${mb ?? "none"}: ${j.tokens.join(",")}`);
    const vsLimit = mb === null
      ? `${(r.rss / size).toFixed(2)}× file`
      : `${(r.rss / (mb * 1048576)).toFixed(2)}× limit`;
    rows.push(
      `| moe-edge wasm | ${mb ?? "none"} | ${j.loadMs.toFixed(0)} | ${
        j.firstTokenMs.toFixed(0)
      } | ${j.decodeTokS.toFixed(2)} | ${j.agree === null ? "—" : `${j.agree}/${steps}`} | ${
        gb(r.rss)
      } (${vsLimit}) | ${j.plan}; ${j.instances} wasm instance${
        j.instances > 1 ? "s" : ""
      }; ${j.misses} expert loads, ${gb(j.bytesFetched)} GB read |`,
    );
  }
  console.log();
  console.log(
    "| engine | --memory-mb | load ms | first token ms | decode tok/s | agreement | peak RSS GB | notes |",
  );
  console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |");
  for (const r of rows) console.log(r);
  console.log(`\nend ${new Date().toISOString()}, load average ${load()}`);
  if (seen.length > 1) {
    console.log(`\nmoe-edge tokens identical across limits: ${seen.every((s) => s === seen[0])}`);
  }
}

if (import.meta.main) await main();

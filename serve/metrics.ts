/**
 * Observability: HTTP request counters, the Prometheus text exposition of
 * `/metrics`, and the JSON of `/v1/moe/stats` that the dashboard polls.
 *
 * @module
 */

import type { ExpertUsageSnapshot } from "./expert_usage.ts";
import type { ModelRuntime } from "./runtime.ts";
import { type RuntimeStatsSnapshot, TTFT_BUCKETS } from "./stats.ts";

/** Counts answered HTTP requests by route and status. */
export class RequestCounter {
  readonly #counts = new Map<string, number>();

  /** One request to `route` was answered with `status`. */
  add(route: string, status: number): void {
    const k = `${route}\u0000${status}`;
    this.#counts.set(k, (this.#counts.get(k) ?? 0) + 1);
  }

  /** `[route, status, count]` rows. */
  rows(): [string, number, number][] {
    return [...this.#counts].map(([k, n]) => {
      const [route, status] = k.split("\u0000");
      return [route, Number(status), n];
    });
  }

  /** Requests answered in all. */
  total(): number {
    let t = 0;
    for (const n of this.#counts.values()) t += n;
    return t;
  }
}

/** The JSON body of `GET /v1/moe/stats`. */
export interface MoeStats {
  /** Model id. */
  model: string;
  /** Architecture. */
  arch: string;
  /** Backend name. */
  backend: string;
  /** Unix milliseconds of this snapshot. */
  time: number;
  /** Seconds since the runtime started. */
  uptimeS: number;
  /** HTTP requests answered. */
  requests: number;
  /** Queue state. */
  queue: { active: number; queued: number; maxConcurrent: number; maxQueue: number };
  /** Tokens, throughput and latencies. */
  stats: RuntimeStatsSnapshot;
  /** Per-layer expert usage. */
  experts: ExpertUsageSnapshot;
}

/** Snapshot for `/v1/moe/stats`. */
export function moeStats(runtime: ModelRuntime, requests: RequestCounter): MoeStats {
  return {
    model: runtime.name,
    arch: runtime.model.arch,
    backend: runtime.model.backend.name,
    time: Date.now(),
    uptimeS: Date.now() / 1000 - runtime.created,
    requests: requests.total(),
    queue: {
      active: runtime.active,
      queued: runtime.queued,
      maxConcurrent: runtime.maxConcurrent,
      maxQueue: runtime.maxQueue,
    },
    stats: runtime.stats.snapshot(),
    experts: runtime.experts.snapshot(),
  };
}

const esc = (s: string): string =>
  s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');

class Writer {
  readonly lines: string[] = [];
  family(name: string, type: "counter" | "gauge" | "histogram", help: string): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  }
  sample(name: string, value: number, labels: Record<string, string | number> = {}): void {
    const ls = Object.entries(labels).map(([k, v]) => `${k}="${esc(String(v))}"`).join(",");
    const v = Number.isFinite(value)
      ? String(value)
      : value > 0
      ? "+Inf"
      : value < 0
      ? "-Inf"
      : "NaN";
    this.lines.push(`${name}${ls ? `{${ls}}` : ""} ${v}`);
  }
  one(
    name: string,
    type: "counter" | "gauge",
    help: string,
    value: number,
    labels: Record<string, string | number> = {},
  ): void {
    this.family(name, type, help);
    this.sample(name, value, labels);
  }
}

/** Prometheus text format (version 0.0.4) of the server's metrics. */
export function renderPrometheus(runtime: ModelRuntime, requests: RequestCounter): string {
  const w = new Writer();
  const s = runtime.stats.snapshot();
  const ex = runtime.experts.snapshot();
  const model = { model: runtime.name };

  w.family("moe_edge_requests_total", "counter", "HTTP requests answered, by route and status.");
  for (const [route, status, n] of requests.rows()) {
    w.sample("moe_edge_requests_total", n, { route, status });
  }
  w.one(
    "moe_edge_prompt_tokens_total",
    "counter",
    "Prompt tokens evaluated.",
    s.promptTokens,
    model,
  );
  w.one(
    "moe_edge_completion_tokens_total",
    "counter",
    "Tokens generated.",
    s.completionTokens,
    model,
  );
  w.one(
    "moe_edge_tokens_per_second",
    "gauge",
    "Tokens generated per second over the last 10 s.",
    s.tokensPerSecond,
    model,
  );
  w.family(
    "moe_edge_adapter_requests_total",
    "counter",
    'Generation requests per named adapter (adapter="" is the base model).',
  );
  for (const [adapter, n] of runtime.adapterRequests) {
    w.sample("moe_edge_adapter_requests_total", n, { ...model, adapter });
  }
  w.family("moe_edge_generations_total", "counter", "Generations finished, by outcome.");
  for (const [outcome, n] of Object.entries(s.generations)) {
    w.sample("moe_edge_generations_total", n, { ...model, outcome });
  }
  w.one(
    "moe_edge_queue_rejections_total",
    "counter",
    "Requests refused with 429 because the queue was full.",
    s.rejected,
    model,
  );
  w.one(
    "moe_edge_queue_depth",
    "gauge",
    "Requests waiting for a generation slot.",
    runtime.queued,
    model,
  );
  w.one(
    "moe_edge_queue_capacity",
    "gauge",
    "Most requests that may wait for a slot.",
    runtime.maxQueue,
    model,
  );
  w.one(
    "moe_edge_active_generations",
    "gauge",
    "Generations holding a slot.",
    runtime.active,
    model,
  );
  w.one("moe_edge_generation_slots", "gauge", "Generation slots.", runtime.maxConcurrent, model);

  w.family(
    "moe_edge_time_to_first_token_seconds",
    "histogram",
    "Seconds from admission to the first generated token.",
  );
  TTFT_BUCKETS.forEach((le, i) =>
    w.sample("moe_edge_time_to_first_token_seconds_bucket", s.ttft.buckets[i], { ...model, le })
  );
  w.sample("moe_edge_time_to_first_token_seconds_bucket", s.ttft.count, { ...model, le: "+Inf" });
  w.sample("moe_edge_time_to_first_token_seconds_sum", s.ttft.sum, model);
  w.sample("moe_edge_time_to_first_token_seconds_count", s.ttft.count, model);

  w.family(
    "moe_edge_expert_hits_total",
    "counter",
    "Expert-store lookups that found the expert resident, by layer.",
  );
  for (const l of ex.moeLayers) {
    w.sample("moe_edge_expert_hits_total", ex.hits[l], { ...model, layer: l });
  }
  w.family(
    "moe_edge_expert_misses_total",
    "counter",
    "Expert-store lookups that had to load the expert, by layer.",
  );
  for (const l of ex.moeLayers) {
    w.sample("moe_edge_expert_misses_total", ex.misses[l], { ...model, layer: l });
  }
  w.family(
    "moe_edge_expert_usage_total",
    "counter",
    "Tokens routed to each expert, by layer and expert.",
  );
  for (const l of ex.moeLayers) {
    ex.usage[l].forEach((n, e) =>
      w.sample("moe_edge_expert_usage_total", n, { ...model, layer: l, expert: e })
    );
  }
  w.one(
    "moe_edge_routed_tokens_total",
    "counter",
    "Tokens routed through the MoE layers.",
    ex.routedTokens,
    model,
  );
  w.one(
    "moe_edge_expert_evictions_total",
    "counter",
    "Experts evicted by the store.",
    ex.store.evictions,
    model,
  );
  w.one(
    "moe_edge_expert_bytes_fetched_total",
    "counter",
    "Bytes the store read for experts.",
    ex.store.bytesFetched,
    model,
  );
  w.one(
    "moe_edge_expert_stall_seconds_total",
    "counter",
    "Seconds compute waited on expert loads.",
    ex.store.stallMs / 1000,
    model,
  );
  const mem = memory();
  if (mem !== null) {
    w.one("process_resident_memory_bytes", "gauge", "Resident memory of the process.", mem.rss);
    w.one("moe_edge_js_heap_used_bytes", "gauge", "JavaScript heap in use.", mem.heapUsed);
    w.one(
      "moe_edge_external_memory_bytes",
      "gauge",
      "Memory outside the JS heap (buffers, WASM).",
      mem.external,
    );
  }
  return w.lines.join("\n") + "\n";
}

function memory(): Deno.MemoryUsage | null {
  try {
    return Deno.memoryUsage();
  } catch {
    return null; // not every deployment target reports memory
  }
}

/**
 * Observability: HTTP request counters, the Prometheus text exposition of
 * `/metrics`, and the JSON of `/v1/moe/stats` that the dashboard polls.
 *
 * @module
 */

import { Counter, Gauge, type Metric, Registry } from "npm:prom-client@15";
import type { ExpertUsageSnapshot } from "./expert_usage.ts";
import type { ModelRuntime } from "./runtime.ts";
import { type RuntimeStatsSnapshot, TTFT_BUCKETS } from "./stats.ts";

/** Counts answered HTTP requests by route and status (a prom-client counter). */
export class RequestCounter {
  /** The `moe_edge_requests_total` family; {@link createMetricsRegistry} registers it. */
  readonly metric: Counter<"route" | "status"> = new Counter({
    name: "moe_edge_requests_total",
    help: "HTTP requests answered, by route and status.",
    labelNames: ["route", "status"] as const,
    registers: [],
  });
  #total = 0;

  /** One request to `route` was answered with `status`. */
  add(route: string, status: number): void {
    this.metric.inc({ route, status });
    this.#total++;
  }

  /** Requests answered in all. */
  total(): number {
    return this.#total;
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

/**
 * The prom-client registry behind `/metrics` for one app: the request
 * counter plus families read from the runtime's counters at scrape time
 * (`collect`), so the decode loop never touches prom-client.
 * `await registry.metrics()` is the Prometheus text format 0.0.4.
 */
export function createMetricsRegistry(runtime: ModelRuntime, requests: RequestCounter): Registry {
  const registers = [new Registry()];
  const [reg] = registers;
  reg.registerMetric(requests.metric);
  const model = (): { model: string } => ({ model: runtime.name });
  const read = (): { s: RuntimeStatsSnapshot; ex: ExpertUsageSnapshot } => ({
    s: runtime.stats.snapshot(),
    ex: runtime.experts.snapshot(),
  });
  const counter = (name: string, help: string, value: () => number): void => {
    new Counter({
      name,
      help,
      labelNames: ["model"] as const,
      registers,
      collect() {
        this.reset();
        this.inc(model(), value());
      },
    });
  };
  const gauge = (name: string, help: string, value: () => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ["model"] as const,
      registers,
      collect() {
        this.reset();
        this.set(model(), value());
      },
    });
  };
  /** A counter with one row per `rows()` entry: `[labels, value]`. */
  const counterRows = <L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    rows: () => Iterable<[Partial<Record<L | "model", string | number>>, number]>,
  ): void => {
    new Counter({
      name,
      help,
      labelNames: ["model", ...labelNames],
      registers,
      collect() {
        this.reset();
        for (const [labels, n] of rows()) this.inc({ ...model(), ...labels }, n);
      },
    });
  };

  counter("moe_edge_prompt_tokens_total", "Prompt tokens evaluated.", () => read().s.promptTokens);
  counter(
    "moe_edge_completion_tokens_total",
    "Tokens generated.",
    () => read().s.completionTokens,
  );
  gauge(
    "moe_edge_tokens_per_second",
    "Tokens generated per second over the last 10 s.",
    () => read().s.tokensPerSecond,
  );
  counterRows(
    "moe_edge_adapter_requests_total",
    'Generation requests per named adapter (adapter="" is the base model).',
    ["adapter"],
    () => [...runtime.adapterRequests].map(([adapter, n]) => [{ adapter }, n]),
  );
  counterRows(
    "moe_edge_generations_total",
    "Generations finished, by outcome.",
    ["outcome"],
    () => Object.entries(read().s.generations).map(([outcome, n]) => [{ outcome }, n]),
  );
  counter(
    "moe_edge_queue_rejections_total",
    "Requests refused with 429 because the queue was full.",
    () => read().s.rejected,
  );
  gauge("moe_edge_queue_depth", "Requests waiting for a generation slot.", () => runtime.queued);
  gauge(
    "moe_edge_queue_capacity",
    "Most requests that may wait for a slot.",
    () => runtime.maxQueue,
  );
  gauge("moe_edge_active_generations", "Generations holding a slot.", () => runtime.active);
  gauge("moe_edge_generation_slots", "Generation slots.", () => runtime.maxConcurrent);
  reg.registerMetric(ttftHistogram(() => read().s.ttft, model));

  const perLayer = (pick: (ex: ExpertUsageSnapshot, l: number) => number) => () => {
    const ex = runtime.experts.snapshot();
    return ex.moeLayers.map((l): [{ layer: number }, number] => [{ layer: l }, pick(ex, l)]);
  };
  counterRows(
    "moe_edge_expert_hits_total",
    "Expert-store lookups that found the expert resident, by layer.",
    ["layer"],
    perLayer((ex, l) => ex.hits[l]),
  );
  counterRows(
    "moe_edge_expert_misses_total",
    "Expert-store lookups that had to load the expert, by layer.",
    ["layer"],
    perLayer((ex, l) => ex.misses[l]),
  );
  counterRows(
    "moe_edge_expert_usage_total",
    "Tokens routed to each expert, by layer and expert.",
    ["layer", "expert"],
    () => {
      const ex = read().ex;
      return ex.moeLayers.flatMap((layer) =>
        Array.from(ex.usage[layer], (n, expert): [{ layer: number; expert: number }, number] => [
          { layer, expert },
          n,
        ])
      );
    },
  );
  counter(
    "moe_edge_routed_tokens_total",
    "Tokens routed through the MoE layers.",
    () => read().ex.routedTokens,
  );
  counter(
    "moe_edge_expert_evictions_total",
    "Experts evicted by the store.",
    () => read().ex.store.evictions,
  );
  counter(
    "moe_edge_expert_bytes_fetched_total",
    "Bytes the store read for experts.",
    () => read().ex.store.bytesFetched,
  );
  counter(
    "moe_edge_expert_stall_seconds_total",
    "Seconds compute waited on expert loads.",
    () => read().ex.store.stallMs / 1000,
  );
  if (memory() !== null) {
    const mem = (pick: (m: Deno.MemoryUsage) => number) =>
      function (this: Gauge) {
        const m = memory();
        if (m !== null) this.set(pick(m));
      };
    new Gauge({
      name: "process_resident_memory_bytes",
      help: "Resident memory of the process.",
      registers,
      collect: mem((m) => m.rss),
    });
    new Gauge({
      name: "moe_edge_js_heap_used_bytes",
      help: "JavaScript heap in use.",
      registers,
      collect: mem((m) => m.heapUsed),
    });
    new Gauge({
      name: "moe_edge_external_memory_bytes",
      help: "Memory outside the JS heap (buffers, WASM).",
      registers,
      collect: mem((m) => m.external),
    });
  }
  return reg;
}

/**
 * The time-to-first-token histogram as a prom-client metric. prom-client's
 * `Histogram` can only `observe()` and reads back asynchronously, while
 * `RuntimeStats` keeps the buckets synchronously for `/v1/moe/stats`; so
 * this reports those buckets through the registry's metric interface
 * (prom-client still formats, escapes and orders the lines).
 */
function ttftHistogram(
  ttft: () => RuntimeStatsSnapshot["ttft"],
  model: () => { model: string },
): Metric {
  const name = "moe_edge_time_to_first_token_seconds";
  const help = "Seconds from admission to the first generated token.";
  type Row = { metricName: string; labels: Record<string, string | number>; value: number };
  const metric = {
    name,
    help,
    get(): Promise<{ name: string; help: string; type: "histogram"; values: Row[] }> {
      const h = ttft();
      const m = model();
      const bucket = `${name}_bucket`;
      const values: Row[] = TTFT_BUCKETS.map((le, i) => ({
        metricName: bucket,
        labels: { ...m, le },
        value: h.buckets[i],
      }));
      values.push(
        { metricName: bucket, labels: { ...m, le: "+Inf" }, value: h.count },
        { metricName: `${name}_sum`, labels: m, value: h.sum },
        { metricName: `${name}_count`, labels: m, value: h.count },
      );
      return Promise.resolve({ name, help, type: "histogram", values });
    },
  };
  // Registry.metrics() needs only name, help and get() of a metric
  return metric as unknown as Metric;
}

/** Content type of {@link createMetricsRegistry}'s text. */
export const PROMETHEUS_CONTENT_TYPE: string = Registry.PROMETHEUS_CONTENT_TYPE;

function memory(): Deno.MemoryUsage | null {
  try {
    return Deno.memoryUsage();
  } catch {
    return null; // not every deployment target reports memory
  }
}

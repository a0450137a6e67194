/**
 * Renders chat templates in a dedicated Worker with a deadline: the render
 * runs off the main thread (other requests keep being served while it
 * works), under the renderer's step/memory/output budget, and a render that
 * passes its deadline gets the worker terminated (and a fresh one spawned
 * for the next job). Jobs run one at a time in arrival order; the worker
 * exists only while jobs are pending, so an idle server holds no thread.
 *
 * @module
 */

import { BudgetError, type BudgetKind } from "./budget.ts";
import { ChatTemplateError } from "./lexer.ts";
import { DEFAULT_RENDER_LIMITS, type RenderLimits } from "./render.ts";
import type { RenderJob, RenderReply } from "./worker.ts";

/** Options of {@link TemplateSandbox}. */
export interface SandboxOptions {
  /** Bounds of each render (defaults: {@link DEFAULT_RENDER_LIMITS}). */
  limits?: RenderLimits;
  /** Milliseconds past `limits.maxMs` before a stuck worker is terminated (default 500). */
  graceMs?: number;
  /** Milliseconds after which a running render's worker is terminated (default `maxMs + graceMs`). */
  deadlineMs?: number;
  /** Most jobs waiting or running (default 64); more are refused at once. */
  maxPending?: number;
}

const START_TIMEOUT_MS = 30_000;

interface Job {
  id: number;
  source: string;
  vars: Record<string, unknown>;
  resolve: (text: string) => void;
  reject: (e: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** A render worker with a deadline per job. */
export class TemplateSandbox {
  readonly #limits: Required<RenderLimits>;
  readonly #deadlineMs: number;
  readonly #maxPending: number;
  readonly #queue: Job[] = [];
  #worker: Worker | null = null;
  /** Whether the worker has loaded its module (the deadline starts at dispatch, not at spawn). */
  #ready = false;
  #startTimer: ReturnType<typeof setTimeout> | undefined;
  #running: Job | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #nextId = 1;
  #spawned = 0;
  #killed = 0;

  /** @param opts bounds, grace period and queue size */
  constructor(opts: SandboxOptions = {}) {
    this.#limits = { ...DEFAULT_RENDER_LIMITS, ...opts.limits };
    this.#deadlineMs = opts.deadlineMs ?? this.#limits.maxMs + (opts.graceMs ?? 500);
    this.#maxPending = opts.maxPending ?? 64;
  }

  /** Workers started so far (a fresh one after each deadline). */
  get spawned(): number {
    return this.#spawned;
  }

  /** Workers terminated because a render passed its deadline. */
  get killed(): number {
    return this.#killed;
  }

  /** Jobs waiting or running. */
  get pending(): number {
    return this.#queue.length + (this.#running ? 1 : 0);
  }

  /**
   * Render `source` with `vars` in the worker. Rejects with
   * `ChatTemplateError` (a `BudgetError` for a bound, including the
   * deadline), or with the signal's reason when it aborts while waiting.
   */
  render(source: string, vars: Record<string, unknown>, signal?: AbortSignal): Promise<string> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.pending >= this.#maxPending) {
      return Promise.reject(
        new ChatTemplateError(
          "template_busy",
          `Cannot render chat template: ${this.#maxPending} renders are already pending`,
        ),
      );
    }
    return new Promise<string>((resolve, reject) => {
      const job: Job = { id: this.#nextId++, source, vars, resolve, reject, signal };
      if (signal) {
        job.onAbort = () => {
          const i = this.#queue.indexOf(job);
          if (i >= 0) {
            this.#queue.splice(i, 1);
            reject(signal.reason);
          }
          // a running job finishes under its own deadline; its reply is then dropped
        };
        signal.addEventListener("abort", job.onAbort, { once: true });
      }
      this.#queue.push(job);
      this.#pump();
    });
  }

  /** Terminate the worker and refuse pending jobs. */
  close(): void {
    const err = new ChatTemplateError("template_render", "The template sandbox was closed");
    if (this.#running) this.#finish(this.#running, () => this.#running!.reject(err));
    for (const j of this.#queue.splice(0)) j.reject(err);
    this.#stop();
  }

  #pump(): void {
    if (this.#running || this.#queue.length === 0) {
      if (!this.#running && this.#queue.length === 0) this.#stop();
      return;
    }
    let w: Worker;
    try {
      w = this.#ensureWorker();
    } catch (e) {
      // no Workers here (some hosts lack them): every waiting job learns it at once
      const err = new ChatTemplateError(
        "template_worker_unavailable",
        `Cannot start the template render worker: ${e instanceof Error ? e.message : String(e)}`,
      );
      for (const j of this.#queue.splice(0)) {
        if (j.onAbort) j.signal?.removeEventListener("abort", j.onAbort);
        j.reject(err);
      }
      return;
    }
    if (!this.#ready) return; // dispatched when the worker says it is ready
    const job = this.#queue.shift()!;
    this.#running = job;
    const msg: RenderJob = { id: job.id, source: job.source, vars: job.vars, limits: this.#limits };
    try {
      w.postMessage(msg);
    } catch (e) {
      // vars that cannot be cloned
      this.#finish(job, () =>
        job.reject(
          new ChatTemplateError(
            "template_render",
            `Cannot render chat template: ${e instanceof Error ? e.message : String(e)}`,
          ),
        ));
      return;
    }
    const ms = this.#deadlineMs;
    this.#timer = setTimeout(() => {
      if (this.#running !== job) return;
      this.#killed++;
      this.#stop(); // the render is stuck: drop the worker, a fresh one serves the next job
      this.#finish(job, () =>
        job.reject(
          new BudgetError(
            "time" satisfies BudgetKind,
            `Cannot render chat template: it ran longer than ${ms} ms and was stopped`,
          ),
        ));
    }, ms);
  }

  #finish(job: Job, settle: () => void): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (job.onAbort) job.signal?.removeEventListener("abort", job.onAbort);
    if (this.#running === job) this.#running = null;
    settle();
    this.#pump();
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    this.#spawned++;
    w.onmessage = (ev: MessageEvent<RenderReply | { ready: true }>) => {
      if (w !== this.#worker) return;
      if ("ready" in ev.data) {
        clearTimeout(this.#startTimer);
        this.#ready = true;
        this.#pump();
        return;
      }
      const job = this.#running;
      if (w !== this.#worker || !job || ev.data.id !== job.id) return;
      const r = ev.data;
      this.#finish(job, () => {
        if (r.ok) job.resolve(r.text);
        else if (r.code === "template_limit") {
          job.reject(new BudgetError((r.bound ?? "time") as BudgetKind, r.message));
        } else job.reject(new ChatTemplateError(r.code, r.message));
      });
    };
    w.onerror = (ev: ErrorEvent) => {
      ev.preventDefault();
      if (w !== this.#worker) return;
      this.#stop();
      const job = this.#running;
      if (job) {
        this.#finish(job, () =>
          job.reject(
            new ChatTemplateError(
              "template_render",
              `Cannot render chat template: the render worker failed: ${ev.message}`,
            ),
          ));
      }
    };
    this.#worker = w;
    this.#ready = false;
    // loading the module (type-checking it under `deno test`) can take seconds on a busy machine;
    // it is not part of any render's deadline, but it must not take forever either
    this.#startTimer = setTimeout(() => {
      if (w !== this.#worker || this.#ready) return;
      this.#stop();
      const job = this.#queue.shift();
      job?.reject(
        new ChatTemplateError(
          "template_render",
          `Cannot render chat template: the render worker did not start within ${START_TIMEOUT_MS} ms`,
        ),
      );
      this.#pump();
    }, START_TIMEOUT_MS);
    return w;
  }

  #stop(): void {
    clearTimeout(this.#startTimer);
    this.#worker?.terminate();
    this.#worker = null;
    this.#ready = false;
  }
}

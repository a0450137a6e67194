/**
 * The device worker: owns a {@link GpuEngine}, runs requests strictly in
 * arrival order, and answers calls through the shared buffer (status, error
 * text, then the call's sequence number + `Atomics.notify`).
 *
 * Started by bridge.ts with `node:worker_threads` (Deno supports it), whose
 * workers can be `unref()`ed: an idle backend never keeps the process alive.
 *
 * @module
 */

import { parentPort } from "node:worker_threads";
import { EngineError, GpuEngine } from "./engine.ts";
import {
  type CallReq,
  CTRL,
  CTRL_WORDS,
  ERR_BYTES,
  ERR_OFF,
  type FromWorker,
  type ToWorker,
} from "./protocol.ts";

let engine: GpuEngine | null = null;
let sab: SharedArrayBuffer | null = null;
let ctrl: Int32Array<ArrayBufferLike> = new Int32Array(0);
let u8: Uint8Array<ArrayBufferLike> = new Uint8Array(0);
/** Failures of requests nobody waited for (writes, frees), reported by the next call. */
const deferred: string[] = [];
let chain: Promise<void> = Promise.resolve();
const enc = new TextEncoder();

function post(m: FromWorker): void {
  parentPort!.postMessage(m);
}

function view(r: { off: number; bytes: number }): Uint8Array {
  return u8.subarray(r.off, r.off + r.bytes);
}

async function call(req: CallReq): Promise<void> {
  const e = engine!;
  switch (req.op) {
    case "alloc":
      return await e.allocSlot(req.slot, req.bytes);
    case "read":
      return await e.readSlot(req.slot, req.offset, view(req.out));
    case "kv":
      return e.createKv(req.cache, req.spec);
    case "matmul": {
      // one contiguous window over every job's regions
      let lo = Infinity, hi = 0;
      for (const j of req.jobs) {
        lo = Math.min(lo, j.act.off, j.out.off);
        hi = Math.max(hi, j.act.off + j.act.bytes, j.out.off + j.out.bytes);
      }
      const w = u8.subarray(lo, hi);
      return await e.matmul(req.jobs, lo, w, w);
    }
    case "getRows":
      return await e.getRows(
        req.slot,
        req.offset,
        req.type,
        req.cols,
        req.rowBytes,
        req.ids,
        view(req.out),
      );
    case "rmsnorm":
      return await e.rmsnorm(
        view(req.x),
        req.n,
        req.eps,
        req.w ? view(req.w) : null,
        view(req.out),
      );
    case "rope":
      return await e.rope(
        view(req.x),
        req.nTok,
        req.nHeads,
        req.headDim,
        req.nRot,
        req.mode,
        view(req.table),
      );
    case "swiglu":
      return await e.swiglu(view(req.g), view(req.u), req.rowLen, view(req.out));
    case "attention":
      return await e.attention(
        req.cache,
        req.layer,
        req.startPos,
        req.nTok,
        view(req.q),
        view(req.k),
        view(req.v),
        req.p,
        view(req.out),
      );
    case "sync":
      return await e.sync();
  }
}

function answer(seq: number, error: string | null): void {
  if (error !== null) {
    const bytes = enc.encode(error).subarray(0, ERR_BYTES);
    u8.set(bytes, ERR_OFF);
    Atomics.store(ctrl, CTRL.ERR_LEN, bytes.length);
  }
  Atomics.store(ctrl, CTRL.STATUS, error === null ? 0 : 1);
  Atomics.store(ctrl, CTRL.DONE, seq);
  Atomics.notify(ctrl, CTRL.DONE);
}

function describe(e: unknown): string {
  const code = e instanceof EngineError ? e.code : "gpu_error";
  return `${code}\u0000${e instanceof Error ? e.message : String(e)}`;
}

async function handle(m: ToWorker): Promise<void> {
  switch (m.k) {
    case "init": {
      sab = m.sab;
      ctrl = new Int32Array(sab, 0, CTRL_WORDS);
      u8 = new Uint8Array(sab);
      try {
        engine = await GpuEngine.create(m.powerPreference, m.maxBindingBytes);
        if (!engine) post({ k: "failed", message: "no WebGPU adapter" });
        else post({ k: "ready", info: engine.info });
      } catch (e) {
        post({ k: "failed", message: e instanceof Error ? e.message : String(e) });
      }
      return;
    }
    case "sab":
      sab = m.sab;
      ctrl = new Int32Array(sab, 0, CTRL_WORDS);
      u8 = new Uint8Array(sab);
      return;
    case "write":
    case "free":
    case "freeKv":
      try {
        if (m.k === "write") engine!.writeSlot(m.slot, m.offset, m.data);
        else if (m.k === "free") engine!.freeSlot(m.slot);
        else engine!.freeKv(m.cache);
      } catch (e) {
        deferred.push(describe(e));
      }
      return;
    case "call": {
      let err: string | null = null;
      try {
        await call(m.req);
      } catch (e) {
        err = describe(e);
      }
      const dev = engine?.takeErrors() ?? null;
      if (err === null && deferred.length > 0) err = deferred.splice(0).join("; ");
      if (err === null && dev !== null) err = `gpu_error\u0000${dev}`;
      answer(m.seq, err);
      return;
    }
  }
}

parentPort!.on("message", (m: ToWorker) => {
  chain = chain.then(() => handle(m));
});

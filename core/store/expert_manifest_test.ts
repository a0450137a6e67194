import assert from "node:assert/strict";
import { sha256Hex } from "./expert_manifest.ts";

Deno.test("sha256Hex: known answers, and a view of shared memory hashes like the same bytes", async () => {
  assert.equal(
    await sha256Hex(new Uint8Array(0)),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  assert.equal(
    await sha256Hex(new TextEncoder().encode("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  // the threaded WASM backend's memory is a SharedArrayBuffer, which WebCrypto refuses
  const shared = new Uint8Array(new SharedArrayBuffer(64));
  for (let i = 0; i < shared.length; i++) shared[i] = (i * 37) & 255;
  const view = shared.subarray(5, 50);
  assert.equal(await sha256Hex(view), await sha256Hex(view.slice()));
  assert.equal(shared[5], (5 * 37) & 255, "the shared bytes are not changed");
});

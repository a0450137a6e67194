/** Byte sources under concurrency: FileSource on one handle, HttpSource against a real nginx. */

import assert from "node:assert/strict";
import { FileSource, HttpSource, StoreError } from "../../mod.ts";
import { startNginx } from "./nginx_test_util.ts";

const DATA = new Uint8Array(300_000).map((_, i) => (i * 31 + (i >> 9)) & 255);

function randomRanges(n: number, max: number): [number, number][] {
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: n }, () => {
    const off = Math.floor(rnd() * (DATA.length - 1));
    return [off, Math.min(DATA.length - off, 1 + Math.floor(rnd() * max))];
  });
}

Deno.test("file source: concurrent reads on one handle never mix ranges", async () => {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeFile(path, DATA);
    const src = await FileSource.open(path);
    const ranges = randomRanges(200, 40_000);
    const got = await Promise.all(ranges.map(([o, n]) => src.read(o, n)));
    got.forEach((b, i) =>
      assert.deepEqual(b, DATA.subarray(ranges[i][0], ranges[i][0] + ranges[i][1]))
    );
    // a bad range in the middle fails alone and does not stall the queue
    const mixed = await Promise.allSettled([
      src.read(0, 10),
      src.read(DATA.length, 1),
      src.read(10, 10),
    ]);
    assert.equal(mixed[0].status, "fulfilled");
    assert.ok(
      mixed[1].status === "rejected" && (mixed[1].reason as StoreError).code === "out_of_range",
    );
    assert.equal(mixed[2].status, "fulfilled");
    src.close();
    await assert.rejects(src.read(0, 1), (e) => e instanceof StoreError && e.code === "closed");
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("http source: real nginx serves exact ranges concurrently, with a strong ETag", async () => {
  const ng = await startNginx({ "data.bin": DATA, "empty.bin": new Uint8Array(0) });
  try {
    const src = await HttpSource.open(`${ng.baseUrl}data.bin`);
    assert.equal(src.size, DATA.length);
    assert.match(src.etag ?? "", /^"[0-9a-f]+-[0-9a-f]+"$/);
    const ranges = randomRanges(64, 60_000);
    const got = await Promise.all(ranges.map(([o, n]) => src.read(o, n)));
    got.forEach((b, i) =>
      assert.deepEqual(b, DATA.subarray(ranges[i][0], ranges[i][0] + ranges[i][1]))
    );
    assert.equal(src.stats().retries, 0);
    const empty = await HttpSource.open(`${ng.baseUrl}empty.bin`);
    assert.equal(empty.size, 0);
    await assert.rejects(
      HttpSource.open(`${ng.baseUrl}missing.bin`),
      (e) => e instanceof StoreError && e.code === "http_status" && e.details.status === 404,
    );
  } finally {
    await ng.stop();
  }
});

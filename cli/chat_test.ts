/** `userTurns`: one line per turn, or a `"""` block as one message. */

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix -- test-only dependency, kept out of the package's import map
import fc from "npm:fast-check@4";
import { userTurns } from "../cli/chat.ts";

async function turns(lines: string[]): Promise<string[]> {
  const out: string[] = [];
  for await (
    const t of userTurns((async function* () {
      yield* lines;
    })())
  ) out.push(t);
  return out;
}

Deno.test("chat turns: lines, CRLF, and multi-line blocks", async () => {
  assert.deepEqual(await turns(["a", "b\r", ""]), ["a", "b", ""]);
  assert.deepEqual(await turns(['"""', "one", "two", '"""', "next"]), ["one\ntwo", "next"]);
  assert.deepEqual(await turns(['"""first', "second", 'last"""']), ["first\nsecond\nlast"]);
  assert.deepEqual(await turns(['  """inline"""  ']), ["inline"]);
  assert.deepEqual(await turns(['"""', "never closed"]), ["never closed"]);
  assert.deepEqual(await turns(['""""""']), [""]);
});

Deno.test("chat turns: lines without a block marker pass through unchanged", async () => {
  const line = fc.string().filter((s) => !s.includes("\n") && !s.trim().startsWith('"""'));
  await fc.assert(
    fc.asyncProperty(fc.array(line), async (lines) => {
      const want = lines.map((l) => l.replace(/\r$/, ""));
      assert.deepEqual(await turns(lines), want);
    }),
  );
});

/**
 * Test setup run by `deno task test` before the suite: installs the pinned
 * llama.cpp oracle (node-llama-cpp) with `npm ci` when it is missing, so the
 * README's test command works on a fresh machine with only Node/npm.
 *
 * @module
 */

import { ensureOracleInstalled, isOracleInstalled } from "../tests/oracle/oracle.ts";

if (!(await isOracleInstalled())) {
  console.error("test setup: installing the llama.cpp oracle (npm ci --prefix tests/oracle)…");
  await ensureOracleInstalled({ quiet: true });
}

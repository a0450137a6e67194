/**
 * What the WASM bench scripts share: `--name value` arguments and the CPU
 * model line every figure is printed with.
 *
 * @module
 */

/** The value after `--name` in `Deno.args`, or `dflt`. */
export function arg(name: string, dflt: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : dflt;
}

/** The CPU model (Linux `/proc/cpuinfo`), or "unknown". */
export function cpuModel(): string {
  try {
    return Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown";
  } catch {
    return "unknown";
  }
}

/**
 * Worker of `cpu_ceiling.ts`: runs the same integer loop as the caller on request.
 *
 * @module
 */

import { parentPort } from "node:worker_threads";
import { spinLoop } from "./cpu_ceiling.ts";

parentPort!.on("message", (n: number) => parentPort!.postMessage(spinLoop(n)));

/**
 * Seeded generators for the adapter domains (same PRNG as `corpus.ts`, so the
 * same seed gives the same text):
 *
 * - `sea`: sea-voyage stories ("The little fox sailed a small boat to the
 *   island. …") — a second text domain, with words the default model never saw
 *   in this order (sailed, waves, island, whale, …), taught by the MoLA adapter;
 * - `qa`: a task format — a one-line story then questions about it ("Q: What
 *   did Tom find? A: a blue ball."), taught by the SMoRA adapter.
 *
 * @module
 */

import { mulberry32 } from "./corpus.ts";

/** The adapter domains. */
export type AdapterDomain = "sea" | "qa";

const ANIMALS = ["fox", "cat", "dog", "bird", "bear", "rabbit", "duck", "frog", "mouse", "owl"];
const SIZES = ["little", "big", "small", "old", "young", "brave"];
const NAMES: readonly (readonly [string, string, string])[] = [
  ["Lily", "She", "her"],
  ["Mia", "She", "her"],
  ["Anna", "She", "her"],
  ["Emma", "She", "her"],
  ["Tom", "He", "his"],
  ["Ben", "He", "his"],
  ["Sam", "He", "his"],
  ["Max", "He", "his"],
];
const BOATS = ["a small boat", "a red boat", "a big ship", "an old raft", "a blue boat"];
const ISLANDS = ["the island", "the far island", "the green island", "the rocky island"];
const SEA_THINGS = [
  "a whale",
  "a crab",
  "a dolphin",
  "a big fish",
  "a seal",
  "a starfish",
  "a turtle",
];
const TREASURE = ["a gold coin", "a pearl", "a map", "a shell", "a chest", "a silver key"];
const WAVES = [
  "The waves were big.",
  "The sea was calm.",
  "The wind pushed the sail.",
  "The water was deep and blue.",
  "A storm came at night.",
];
const COLORS = ["red", "blue", "green", "yellow", "pink", "white", "brown"];
const OBJECTS = ["ball", "kite", "box", "hat", "cake", "book", "drum", "toy", "cup", "bell"];
const PLACES = ["park", "forest", "garden", "river", "hill", "beach", "farm", "house", "field"];

function maker(rand: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const hero = (): { subj: string; pron: string; poss: string; again: string } => {
    if (rand() < 0.5) {
      const a = pick(ANIMALS);
      return { subj: `The ${pick(SIZES)} ${a}`, pron: "It", poss: "its", again: `The ${a}` };
    }
    const [n, p, s] = pick(NAMES);
    return { subj: n, pron: p, poss: s, again: n };
  };
  const sea = (): string => {
    const h = hero();
    const s: string[] = [];
    const boat = pick(BOATS), isl = pick(ISLANDS);
    s.push(`${h.subj} sailed ${boat} to ${isl}.`);
    s.push(pick(WAVES));
    s.push(`${h.pron} saw ${pick(SEA_THINGS)} in the water.`);
    if (rand() < 0.6) {
      s.push(`${h.pron} waved and the ${pick(["whale", "seal", "crab"])} swam away.`);
    }
    s.push(
      `On ${isl}, ${h.again.startsWith("The ") ? "the" + h.again.slice(3) : h.again} found ${
        pick(TREASURE)
      } in the sand.`,
    );
    if (rand() < 0.5) s.push(pick(WAVES));
    s.push(`Then ${h.pron.toLowerCase()} sailed home with ${h.poss} treasure.`);
    return s.join(" ");
  };
  const qa = (): string => {
    const h = hero();
    const c = rand() < 0.7 ? `${pick(COLORS)} ` : "";
    const o = pick(OBJECTS);
    const art = /^[aeiou]/.test(c || o) ? "an" : "a";
    const thing = `${art} ${c}${o}`;
    const place = pick(PLACES);
    const who = h.again.startsWith("The ") ? "the" + h.again.slice(3) : h.again;
    const s = [`${h.subj} found ${thing} in the ${place}.`];
    const qs = [
      `Q: What did ${who} find? A: ${thing}.`,
      `Q: Where was it? A: in the ${place}.`,
      `Q: Who found it? A: ${h.again.startsWith("The ") ? "the" + h.again.slice(3) : h.again}.`,
    ];
    // one to three questions, in a seeded order
    const n = 1 + Math.floor(rand() * 3);
    for (let i = 0; i < n; i++) s.push(qs.splice(Math.floor(rand() * qs.length), 1)[0]);
    return s.join(" ");
  };
  return { sea, qa };
}

/** `count` documents of `domain` from `seed` (deterministic). */
export function buildDomain(domain: AdapterDomain, seed: number, count: number): string[] {
  const m = maker(mulberry32(seed));
  const gen = domain === "sea" ? m.sea : m.qa;
  return Array.from({ length: count }, gen);
}

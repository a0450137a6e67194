/**
 * A deterministic synthetic English corpus: short children's stories from a small
 * template grammar ("The little fox found a red ball. It was happy."). Written by the
 * project, so it carries no licence questions. Same seed → same text.
 *
 * @module
 */

import { mulberry32 } from "../../core/util/rng.ts";

/** Deterministic 32-bit PRNG (mulberry32), floats in [0, 1); from `core/util/rng.ts`. */
export { mulberry32 };

const ANIMALS = [
  "fox",
  "cat",
  "dog",
  "bird",
  "bear",
  "rabbit",
  "duck",
  "frog",
  "mouse",
  "owl",
  "pig",
  "lion",
  "fish",
  "horse",
  "turtle",
  "puppy",
  "kitten",
  "squirrel",
];
const SIZES = ["little", "big", "small", "tiny", "old", "young"];
const TRAITS = ["brave", "shy", "happy", "sleepy", "kind", "funny", "clever", "curious", "gentle"];
const COLORS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "white", "brown"];
const OBJECTS = [
  "ball",
  "kite",
  "box",
  "hat",
  "cake",
  "book",
  "drum",
  "toy",
  "boat",
  "apple",
  "flower",
  "shell",
  "stone",
  "cup",
  "bell",
  "leaf",
];
const PLACES = [
  "park",
  "forest",
  "garden",
  "river",
  "lake",
  "hill",
  "beach",
  "farm",
  "house",
  "school",
  "village",
  "field",
];
const SPOTS = ["tree", "bush", "rock", "bridge", "table", "bed", "fence", "log"];
const GIRLS = ["Lily", "Mia", "Anna", "Sara", "Emma", "Lucy", "Zoe", "Ella"];
const BOYS = ["Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Tim", "Finn"];
const FEELINGS = ["happy", "sad", "scared", "excited", "tired", "proud", "surprised", "hungry"];
const WEATHER = [
  "The sun was warm.",
  "The sky was blue.",
  "It was a sunny day.",
  "It was a rainy day.",
  "The wind was cold.",
  "The stars were bright.",
];
const PLAY = ["played", "ran", "jumped", "danced", "sang", "laughed"];
const SOUNDS = ["a loud noise", "a soft song", "a funny sound", "a little cry"];

interface Actor {
  /** Sentence subject with article ("The little fox", "Lily"). */
  subj: string;
  /** Object form ("the little fox", "Lily"). */
  obj: string;
  /** Pronoun ("It", "She", "He"). */
  pron: string;
  /** Possessive ("its", "her", "his"). */
  poss: string;
  /** Short re-mention ("The fox", "Lily"). */
  again: string;
}

/** Mid-sentence form: "The fox" → "the fox", "She" → "she"; names stay capitalised. */
function lower(s: string): string {
  if (s.startsWith("The ")) return "the " + s.slice(4);
  return s === "It" || s === "She" || s === "He" ? s.toLowerCase() : s;
}

function storyMaker(rand: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const chance = (p: number): boolean => rand() < p;
  const article = (w: string): string => (/^[aeiou]/.test(w) ? "an" : "a");
  const animal = (): Actor => {
    const a = pick(ANIMALS);
    const adj = chance(0.5) ? pick(SIZES) : pick(TRAITS);
    return {
      subj: `The ${adj} ${a}`,
      obj: `the ${adj} ${a}`,
      pron: "It",
      poss: "its",
      again: `The ${a}`,
    };
  };
  const child = (): Actor => {
    const girl = chance(0.5);
    const n = pick(girl ? GIRLS : BOYS);
    return { subj: n, obj: n, pron: girl ? "She" : "He", poss: girl ? "her" : "his", again: n };
  };
  const actor = (): Actor => (chance(0.55) ? animal() : child());
  const thing = (): string => {
    const o = pick(OBJECTS), c = chance(0.7) ? pick(COLORS) + " " : "";
    return `${article(c || o)} ${c}${o}`;
  };

  return (): string => {
    const hero = actor();
    let friend = actor();
    while (friend.again === hero.again) friend = actor();
    const obj = thing();
    const objName = obj.replace(/^an? /, "");
    const place = pick(PLACES);
    const s: string[] = [];
    // opening
    switch (Math.floor(rand() * 4)) {
      case 0:
        if (hero.pron === "It") {
          const rest = hero.subj.slice(4);
          s.push(`Once upon a time, there was ${article(rest)} ${rest}.`);
          s.push(`${hero.pron} lived near the ${place}.`);
        } else {
          s.push(`Once upon a time, there was a ${pick(TRAITS)} child named ${hero.subj}.`);
        }
        break;
      case 1:
        s.push(`One day, ${lower(hero.subj)} went to the ${place}.`);
        break;
      case 2:
        s.push(pick(WEATHER));
        s.push(`${hero.subj} was at the ${place}.`);
        break;
      default:
        s.push(`${hero.subj} woke up early and went to the ${place}.`);
    }
    // the find
    s.push(
      `${chance(0.5) ? hero.again : hero.pron} ${pick(["found", "saw", "had"])} ${obj}${
        chance(0.4) ? ` under the ${pick(SPOTS)}` : ""
      }.`,
    );
    s.push(`${hero.pron} was ${pick(FEELINGS)}.`);
    // the friend
    switch (Math.floor(rand() * 3)) {
      case 0:
        s.push(`Then ${lower(hero.pron)} met ${friend.obj}.`);
        s.push(`"Can I play with your ${objName}?" asked ${lower(friend.again)}.`);
        if (chance(0.7)) {
          s.push(`"Yes, you can," said ${lower(hero.again)}.`);
          s.push(
            `${hero.again} and ${lower(friend.again)} ${pick(PLAY)} with the ${objName} all day.`,
          );
        } else {
          s.push(`"No, it is mine," said ${lower(hero.again)}.`);
          s.push(`${friend.again} was sad and went home.`);
          s.push(`Later, ${lower(hero.again)} said sorry and gave ${poss(friend)} the ${objName}.`);
        }
        break;
      case 1:
        s.push(`${hero.pron} heard ${pick(SOUNDS)} from the ${pick(SPOTS)}.`);
        s.push(`It was ${friend.obj}!`);
        s.push(
          `${friend.again} was ${pick(FEELINGS)}, so ${lower(hero.again)} helped ${me(friend)}.`,
        );
        break;
      default:
        s.push(`${hero.pron} wanted to show the ${objName} to ${friend.obj}.`);
        s.push(`${hero.pron} ${pick(["ran", "walked", "hopped"])} to the ${pick(PLACES)}.`);
        s.push(`${friend.again} said, "What a nice ${objName}!"`);
    }
    // ending
    switch (Math.floor(rand() * 4)) {
      case 0:
        s.push(`At the end of the day, ${lower(hero.again)} went home and slept.`);
        break;
      case 1:
        s.push(
          `From that day on, ${lower(hero.again)} and ${lower(friend.again)} were best friends.`,
        );
        break;
      case 2:
        s.push(`${hero.pron} smiled and said, "I love my ${objName}!"`);
        break;
      default:
        s.push(`${hero.pron} was very ${pick(FEELINGS)}. The end.`);
    }
    return s.join(" ");
  };
}

/** Object pronoun ("it", "her", "him") of an actor, or its name. */
function me(a: Actor): string {
  return a.pron === "It" ? "it" : a.pron === "She" ? "her" : "him";
}

/** Recipient form used after "gave": the actor's object form. */
function poss(a: Actor): string {
  return a.pron === "It" ? lower(a.again) : a.again;
}

/** `n` stories (one per array entry) from the grammar, deterministic in `seed`. */
export function buildStories(seed: number, n: number): string[] {
  const make = storyMaker(mulberry32(seed));
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(make());
  return out;
}

if (import.meta.main) {
  for (const s of buildStories(1, 8)) console.log(s + "\n");
}

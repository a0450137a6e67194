/**
 * Byte-level helpers: UTF-8 encode/decode and GPT-2's byte↔unicode mapping
 * (`bytes_to_unicode`, llama.cpp `unicode_byte_to_utf8_map`).
 *
 * @module
 */

const encoder = new TextEncoder();

/** UTF-8 bytes of a string (lone surrogates become U+FFFD). */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** UTF-8 byte length of a string without allocating (lone surrogates count as U+FFFD). */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/** A UTF-8 decoder that keeps a leading U+FEFF and replaces invalid bytes with U+FFFD. */
export function newUtf8Decoder(): TextDecoder {
  return new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
}

/** Decodes UTF-8 bytes (invalid sequences become U+FFFD, a leading BOM is kept). */
export function decodeUtf8(bytes: Uint8Array): string {
  return newUtf8Decoder().decode(bytes);
}

function buildByteToChar(): string[] {
  const map: (string | undefined)[] = new Array(256);
  const keep = (lo: number, hi: number): void => {
    for (let b = lo; b <= hi; b++) map[b] = String.fromCharCode(b);
  };
  keep(0x21, 0x7e);
  keep(0xa1, 0xac);
  keep(0xae, 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (map[b] === undefined) map[b] = String.fromCharCode(256 + n++);
  }
  return map as string[];
}

/** GPT-2 byte-level alphabet: `BYTE_TO_CHAR[b]` is the one-char string standing for byte `b`. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

/** Inverse of {@link BYTE_TO_CHAR}: char code → byte, or -1. Indexed up to 0x143. */
const CHAR_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(0x144).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => {
    t[ch.charCodeAt(0)] = b;
  });
  return t;
})();

/** Byte that a GPT-2 byte-level char code stands for, or -1. */
export function charToByte(code: number): number {
  return code < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[code] : -1;
}

/** Maps the UTF-8 bytes of `text` to GPT-2 byte-level chars. */
export function byteEncode(text: string): string {
  const bytes = utf8(text);
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += BYTE_TO_CHAR[bytes[i]];
  return out;
}

/**
 * Inverse of the byte-level mapping for a token text, like llama.cpp
 * `llama_decode_text`: a code point outside the alphabet becomes the literal text
 * `[UNK_BYTE_0x<its utf-8 hex><whole token text>]`.
 */
export function byteDecode(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    const b = charToByte(cp);
    if (b >= 0) {
      out.push(b);
      continue;
    }
    let hex = "";
    for (const x of utf8(ch)) hex += x.toString(16).padStart(2, "0");
    for (const x of utf8(`[UNK_BYTE_0x${hex}${text}]`)) out.push(x);
  }
  return Uint8Array.from(out);
}

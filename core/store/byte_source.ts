/**
 * Byte sources now live in the leaf folder `core/io/` (formats read through them and
 * must not depend on the store); this module re-exports them so that existing imports
 * keep working.
 *
 * @module
 */

export * from "../io/byte_source.ts";

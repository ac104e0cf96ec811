import { convexToJson, type Value } from "convex/values";

export type Format = "json" | "convex_encoded_json";

export function isFormat(value: unknown): value is Format {
  return value === "json" || value === "convex_encoded_json";
}

function base64(bytes: ArrayBuffer): string {
  return Buffer.from(bytes).toString("base64");
}

/**
 * Convex's "json" export: plain JSON that a client can read without the Convex value
 * codec. Int64 becomes a decimal string, bytes a base64 string, non-finite floats
 * their names; objects and arrays keep their shape.
 */
export function toCleanJson(value: Value): unknown {
  if (value === null || typeof value === "boolean" || typeof value === "string") return value;
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number") return Number.isFinite(value) ? value : String(value);
  if (value instanceof ArrayBuffer) return base64(value);
  if (Array.isArray(value)) return value.map((item) => toCleanJson(item));
  return Object.fromEntries(
    Object.entries(value).flatMap(([key, item]) => (item === undefined ? [] : [[key, toCleanJson(item)]])),
  );
}

export function exportValue(value: Value | undefined, format: Format): unknown {
  const defined = value === undefined ? null : value;
  return format === "json" ? toCleanJson(defined) : convexToJson(defined);
}

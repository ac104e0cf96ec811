import { convexToJson, type Value } from "convex/values";

export type Format = "json" | "convex_encoded_json";

export function isFormat(value: unknown): value is Format {
  return value === "json" || value === "convex_encoded_json";
}

function base64(bytes: ArrayBuffer): string {
  return Buffer.from(bytes).toString("base64");
}

/**
 * Convex's "json" export (`ValueFormat::ConvexCleanJSON`, crate `value`, `export_clean`):
 * plain JSON that a client can read without the Convex value codec. Int64 becomes a
 * decimal string, bytes a base64 string, NaN and the infinities their names; objects and
 * arrays keep their shape.
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

/** The value in ``format``, as a JSON tree (numbers still JavaScript numbers). */
export function exportValue(value: Value | undefined, format: Format): unknown {
  const defined = value === undefined ? null : value;
  return format === "json" ? toCleanJson(defined) : convexToJson(defined);
}

/**
 * A finite float64 written the way the real backend writes it: serde_json's `f64`
 * output (the `ryu` crate), which differs from JavaScript's `JSON.stringify`. A whole
 * number keeps a fractional part (`1795928902850.0`, where JavaScript writes
 * `1795928902850`), and the exponent form starts at 1e17 and below 1e-5 with no `+`
 * (`1e21`, `1.5e-7`). Both pick the shortest digits that read back to the same double.
 */
export function formatFloat64(value: number): string {
  if (Object.is(value, -0)) return "-0.0";
  if (value === 0) return "0.0";
  const sign = value < 0 ? "-" : "";
  const [mantissa, exponentText] = Math.abs(value).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const length = digits.length;
  const point = Number(exponentText) + 1; // the decimal point sits after `point` digits
  if (length <= point && point <= 16) return `${sign}${digits}${"0".repeat(point - length)}.0`;
  if (0 < point && point <= 16) return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
  if (-5 < point && point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`;
  const exponent = point - 1;
  const head = length === 1 ? digits : `${digits[0]}.${digits.slice(1)}`;
  return `${sign}${head}e${exponent}`;
}

/**
 * Object keys in the order the real backend writes them: a Convex object is a BTreeMap,
 * ordered by UTF-8 bytes, which is code point order (not JavaScript's UTF-16 order).
 */
function byteOrder(a: string, b: string): number {
  const left = [...a];
  const right = [...b];
  for (let i = 0; i < Math.min(left.length, right.length); i += 1) {
    const diff = (left[i].codePointAt(0) ?? 0) - (right[i].codePointAt(0) ?? 0);
    if (diff !== 0) return diff;
  }
  return left.length - right.length;
}

/**
 * JSON text for a value tree as the real backend serializes it: floats per
 * `formatFloat64`, object keys sorted when `sortKeys` (Convex values) and kept in
 * insertion order otherwise (the response envelope), strings escaped like serde_json
 * (which matches `JSON.stringify` for well-formed strings).
 */
export function serializeJson(tree: unknown, sortKeys: boolean): string {
  if (tree === null || tree === undefined) return "null";
  if (typeof tree === "boolean") return tree ? "true" : "false";
  if (typeof tree === "string") return JSON.stringify(tree);
  if (typeof tree === "number") {
    if (!Number.isFinite(tree)) throw new Error(`non-finite number ${tree} has no JSON form`);
    return formatFloat64(tree);
  }
  if (Array.isArray(tree)) return `[${tree.map((item) => serializeJson(item, sortKeys)).join(",")}]`;
  if (typeof tree === "object") {
    const entries = Object.entries(tree as Record<string, unknown>).filter(([, item]) => item !== undefined);
    if (sortKeys) entries.sort(([a], [b]) => byteOrder(a, b));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${serializeJson(item, sortKeys)}`).join(",")}}`;
  }
  throw new Error(`a ${typeof tree} has no JSON form`);
}

/** A marker for a JSON text already serialized, spliced verbatim into the envelope. */
export class RawJson {
  constructor(readonly text: string) {}
}

/** The value in ``format`` as the JSON text the real backend writes. */
export function exportValueText(value: Value | undefined, format: Format): RawJson {
  return new RawJson(serializeJson(exportValue(value, format), true));
}

/** An HTTP response body: an envelope whose fields may be `RawJson`, in field order. */
export function serializeEnvelope(body: Record<string, unknown>): string {
  const parts = Object.entries(body)
    .filter(([, item]) => item !== undefined)
    .map(([key, item]) => `${JSON.stringify(key)}:${item instanceof RawJson ? item.text : serializeJson(item, false)}`);
  return `{${parts.join(",")}}`;
}

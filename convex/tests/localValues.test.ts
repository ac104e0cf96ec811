import { expect, test } from "vitest";
import { formatFloat64, serializeEnvelope, exportValueText } from "../local/values";

// Expected texts are what serde_json 1.0.145 (ryu 1.0.23, the versions in convex-backend's Cargo.lock)
// writes for the same doubles.
test("float64 is written like serde_json: whole numbers keep .0, exponents from 1e17 and below 1e-5", () => {
  const cases: [number, string][] = [
    [1795928902850, "1795928902850.0"],
    [0, "0.0"],
    [-0, "-0.0"],
    [1, "1.0"],
    [-3, "-3.0"],
    [0.7, "0.7"],
    [1736845200000.5, "1736845200000.5"],
    [1e15, "1000000000000000.0"],
    [1e16, "1e16"],
    [1.5e17, "1.5e17"],
    [1e21, "1e21"],
    [123456789012345680000, "1.2345678901234568e20"],
    [0.0001, "0.0001"],
    [0.00001, "0.00001"],
    [0.000001, "1e-6"],
    [1.5e-7, "1.5e-7"],
    [5e-324, "5e-324"],
    [1.7976931348623157e308, "1.7976931348623157e308"],
    [-2.5e-10, "-2.5e-10"],
  ];
  for (const [value, text] of cases) expect(formatFloat64(value), String(value)).toBe(text);
});

test("values are written with sorted keys, the envelope in field order", () => {
  const value = { updatedAt: 1736845200000, _id: "a", config: { voice: "v", domain: "d" }, list: [1, null] };
  const body = serializeEnvelope({ status: "success", value: exportValueText(value, "json") });
  expect(body).toBe(
    '{"status":"success","value":{"_id":"a","config":{"domain":"d","voice":"v"},"list":[1.0,null],"updatedAt":1736845200000.0}}',
  );
  const special = exportValueText({ n: Number.NaN, i: 5n, z: -0 }, "convex_encoded_json").text;
  expect(JSON.parse(special)).toEqual({ i: { $integer: "BQAAAAAAAAA=" }, n: { $float: "AAAAAAAA+H8=" }, z: { $float: "AAAAAAAAAIA=" } });
  expect(exportValueText({ i: 5n, n: Number.POSITIVE_INFINITY }, "json").text).toBe('{"i":"5","n":"Infinity"}');
});

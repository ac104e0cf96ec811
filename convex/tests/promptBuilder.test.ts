import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { buildFullPrompt, PromptBuildError, TEMPLATE_VERSION } from "../convex/lib/promptBuilder";

type Vector = { name: string; agent: Record<string, unknown>; expected?: string; error?: string };
const vectors = JSON.parse(readFileSync(new URL("../../prompts/test_vectors.json", import.meta.url), "utf8")) as {
  templateVersion: number;
  vectors: Vector[];
};

describe("shared test vectors", () => {
  test("were generated from the templates this builder uses", () => {
    expect(vectors.templateVersion).toBe(TEMPLATE_VERSION);
    expect(vectors.vectors.length).toBeGreaterThan(5);
  });

  for (const vector of vectors.vectors) {
    test(`vector: ${vector.name}`, () => {
      if (vector.error !== undefined) {
        expect(() => buildFullPrompt(vector.agent)).toThrow(PromptBuildError);
      } else {
        expect(buildFullPrompt(vector.agent)).toBe(vector.expected);
      }
    });
  }
});

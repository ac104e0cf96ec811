import { convexTest } from "convex-test";
import schema from "../convex/schema";
import { modules } from "../local/modules";

export function newBackend() {
  return convexTest(schema, modules);
}

export const dentalConfig = {
  domain: "dental",
  language: "en-US",
  voice: "alloy",
  model: "gpt-4o-mini",
  greeting: "Hello from the clinic",
};

export function agentArgs(overrides: Record<string, unknown> = {}) {
  return {
    organizationId: "org_a",
    name: "Priya",
    systemPrompt: "Book appointments.",
    config: dentalConfig,
    ...overrides,
  };
}

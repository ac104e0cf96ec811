import { ConvexError } from "convex/values";
import { isKnownDomain } from "./promptBuilder";
import type { AgentConfig } from "../schema";

// Documented limits (README "Limits"). Lengths are JavaScript string lengths
// (UTF-16 code units), as Convex itself counts them.
export const LIMITS = {
  organizationId: 200,
  name: 200,
  systemPrompt: 20_000,
  greeting: 1_000,
  shortField: 100,
  fullPrompt: 64_000,
  changedSinceMax: 1_000,
  listMax: 1_000,
  rebuildBatchMax: 500,
} as const;

export type InvalidArgument = {
  code: "INVALID_ARGUMENT";
  field: string;
  message: string;
  limit?: number;
  actual?: number;
};

export function invalid(field: string, message: string, extra: { limit?: number; actual?: number } = {}): ConvexError<InvalidArgument> {
  return new ConvexError({ code: "INVALID_ARGUMENT", field, message, ...extra });
}

export function checkLength(field: string, value: string, limit: number, allowEmpty = false): void {
  if (!allowEmpty && value.length === 0) {
    throw invalid(field, `${field} must not be empty`);
  }
  if (value.length > limit) {
    throw invalid(field, `${field} is ${value.length} characters, the limit is ${limit}`, {
      limit,
      actual: value.length,
    });
  }
}

export function checkConfig(config: AgentConfig): void {
  if (!isKnownDomain(config.domain)) {
    throw invalid("config.domain", `unknown domain '${config.domain}'`);
  }
  checkLength("config.language", config.language, LIMITS.shortField);
  checkLength("config.voice", config.voice, LIMITS.shortField);
  checkLength("config.model", config.model, LIMITS.shortField);
  if (config.greeting !== undefined) {
    checkLength("config.greeting", config.greeting, LIMITS.greeting, true);
  }
  if (config.temperature !== undefined && !(config.temperature >= 0 && config.temperature <= 2)) {
    throw invalid("config.temperature", "config.temperature must be between 0 and 2");
  }
}

/** An optional integer argument in 1..max; absent means ``fallback``. Out of range is an
 * error, never silently clamped: a caller asking for more than it gets must be told. */
export function checkCount(field: string, value: number | undefined, fallback: number, max: number): number {
  const count = value ?? fallback;
  if (!Number.isInteger(count) || count < 1 || count > max) {
    throw invalid(field, `${field} must be an integer from 1 to ${max}`, { limit: max, actual: count });
  }
  return count;
}

/* eslint-disable */
/**
 * Generated `api` utility (written to match `npx convex codegen`).
 */
import type { ApiFromModules, FilterApi, FunctionReference } from "convex/server";
import type * as agents from "../agents.js";
import type * as lib_limits from "../lib/limits.js";
import type * as lib_promptBuilder from "../lib/promptBuilder.js";

declare const fullApi: ApiFromModules<{
  agents: typeof agents;
  "lib/limits": typeof lib_limits;
  "lib/promptBuilder": typeof lib_promptBuilder;
}>;
export declare const api: FilterApi<typeof fullApi, FunctionReference<any, "public">>;
export declare const internal: FilterApi<typeof fullApi, FunctionReference<any, "internal">>;

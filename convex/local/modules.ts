// The project's Convex modules, as convex-test wants them: a map from path to loader,
// with one key under `_generated`. Add a module here when you add one to convex/;
// tests/modules.test.ts fails until you do.
export const modules: Record<string, () => Promise<unknown>> = {
  "../convex/_generated/api.js": () => import("../convex/_generated/api.js"),
  "../convex/_generated/server.js": () => import("../convex/_generated/server.js"),
  "../convex/agents.ts": () => import("../convex/agents.ts"),
  "../convex/lib/limits.ts": () => import("../convex/lib/limits.ts"),
  "../convex/lib/promptBuilder.ts": () => import("../convex/lib/promptBuilder.ts"),
};

export const MODULES_ROOT = "../convex/";

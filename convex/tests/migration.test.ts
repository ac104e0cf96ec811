import { describe, expect, test } from "vitest";
import { internal } from "../convex/_generated/api";
import { buildFullPrompt, TEMPLATE_VERSION } from "../convex/lib/promptBuilder";
import { agentArgs, newBackend } from "./setup";

type Backend = ReturnType<typeof newBackend>;

async function insertRaw(t: Backend, count: number, extra: (i: number) => Record<string, unknown>) {
  await t.run(async (ctx) => {
    for (let i = 0; i < count; i++) {
      await ctx.db.insert("agents", { ...agentArgs({ name: `agent ${i}` }), createdAt: 1, updatedAt: 1, ...extra(i) });
    }
  });
}

async function allAgents(t: Backend) {
  return await t.run(async (ctx) => ctx.db.query("agents").collect());
}

describe("rebuildAllPrompts", () => {
  test("migrates 2,000 legacy agents in batches and reports the seed's result shape", async () => {
    const t = newBackend();
    await insertRaw(t, 2000, (i) => (i < 1500 ? {} : { fullPrompt: "x", templateVersion: TEMPLATE_VERSION }));
    const result = await t.action(internal.agents.rebuildAllPrompts, {});
    expect(result).toEqual({
      success: true,
      total: 2000,
      rebuilt: 1500,
      skipped: 500,
      failed: 0,
      message: "Rebuilt 1500 prompts, skipped 500 agents that already had current prompts",
    });
    const docs = await allAgents(t);
    const legacy = docs.filter((doc) => doc.fullPrompt !== "x");
    expect(legacy).toHaveLength(1500);
    for (const doc of legacy) {
      expect(doc.fullPrompt).toBe(buildFullPrompt(doc));
      expect(doc.templateVersion).toBe(TEMPLATE_VERSION);
      // A new prompt is a new version: caches keyed agentId:updatedAt must miss.
      expect(doc.updatedAt).toBeGreaterThan(1);
    }
  });

  test("rebuilds prompts stamped with outdated templates without force", async () => {
    const t = newBackend();
    await insertRaw(t, 3, (i) => ({ fullPrompt: "old text", templateVersion: i === 0 ? TEMPLATE_VERSION : 0 }));
    const result = await t.action(internal.agents.rebuildAllPrompts, {});
    expect(result).toMatchObject({ total: 3, rebuilt: 2, skipped: 1 });
    const docs = await allAgents(t);
    expect(docs.filter((doc) => doc.fullPrompt === "old text")).toHaveLength(1);
  });

  test("force rebuilds current prompts too, bumping updatedAt only where the text changed", async () => {
    const t = newBackend();
    const good = buildFullPrompt(agentArgs({ name: "agent 0" }));
    await insertRaw(t, 2, (i) => ({ fullPrompt: i === 0 ? good : "stale text", templateVersion: TEMPLATE_VERSION }));
    const result = await t.action(internal.agents.rebuildAllPrompts, { force: true });
    expect(result).toMatchObject({ total: 2, rebuilt: 2, skipped: 0, success: true });
    const [first, second] = await allAgents(t);
    expect(first.updatedAt).toBe(1);
    expect(second.updatedAt).toBeGreaterThan(1);
    expect(second.fullPrompt).toBe(buildFullPrompt(second));
  });

  test("reports agents that cannot be built and leaves them untouched", async () => {
    const t = newBackend();
    await insertRaw(t, 2, (i) => (i === 0 ? { config: { ...agentArgs().config, domain: "martian" } } : {}));
    const result = await t.action(internal.agents.rebuildAllPrompts, {});
    expect(result).toMatchObject({ success: false, total: 2, rebuilt: 1, failed: 1 });
    expect(result.message).toContain("1 failed");
    const [broken] = await allAgents(t);
    expect(broken.fullPrompt).toBeUndefined();
    expect(broken.updatedAt).toBe(1);
  });
});

describe("rebuildBatch", () => {
  test("one transaction touches at most 100 agents and hands on a cursor", async () => {
    const t = newBackend();
    await insertRaw(t, 150, () => ({}));
    const first = await t.mutation(internal.agents.rebuildBatch, { cursor: null, force: false });
    expect(first).toMatchObject({ seen: 100, rebuilt: 100, isDone: false });
    const second = await t.mutation(internal.agents.rebuildBatch, { cursor: first.continueCursor, force: false });
    expect(second).toMatchObject({ seen: 50, rebuilt: 50 });
  });
});

describe("rebuildPromptsForOrganization", () => {
  test("touches only the named organization", async () => {
    const t = newBackend();
    await insertRaw(t, 250, (i) => ({ organizationId: i % 2 === 0 ? "org_even" : "org_odd" }));
    const result = await t.action(internal.agents.rebuildPromptsForOrganization, { organizationId: "org_even" });
    expect(result).toMatchObject({ success: true, total: 125, rebuilt: 125, skipped: 0 });
    const docs = await allAgents(t);
    expect(docs.filter((doc) => doc.organizationId === "org_odd").every((doc) => doc.fullPrompt === undefined)).toBe(true);
    expect(docs.filter((doc) => doc.organizationId === "org_even").every((doc) => doc.fullPrompt !== undefined)).toBe(true);
  });
});

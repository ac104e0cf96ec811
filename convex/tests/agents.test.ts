import { afterEach, describe, expect, test, vi } from "vitest";
import { ConvexError, type Value } from "convex/values";
import { internal } from "../convex/_generated/api";
import type { Id } from "../convex/_generated/dataModel";
import { buildFullPrompt, TEMPLATE_VERSION } from "../convex/lib/promptBuilder";
import { LIMITS } from "../convex/lib/limits";
import { agentArgs, newBackend } from "./setup";

afterEach(() => {
  vi.useRealTimers();
});

async function errorData(promise: Promise<unknown>): Promise<Record<string, Value>> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ConvexError);
    return (error as ConvexError<Record<string, Value>>).data;
  }
  throw new Error("expected the call to fail");
}

describe("create", () => {
  test("stores a fullPrompt built in the same transaction, stamped with the template version", async () => {
    const t = newBackend();
    const id = await t.mutation(internal.agents.create, agentArgs());
    const doc = await t.query(internal.agents.get, { agentId: id });
    expect(doc?.fullPrompt).toBe(buildFullPrompt(agentArgs()));
    expect(doc?.templateVersion).toBe(TEMPLATE_VERSION);
    expect(doc?.createdAt).toBe(doc?.updatedAt);
    expect(doc?.promptVersion).toBe(doc?.updatedAt);
  });

  test("rejects a systemPrompt over the limit with data naming the field and the limit", async () => {
    const t = newBackend();
    const tooLong = "x".repeat(LIMITS.systemPrompt + 1);
    const data = await errorData(t.mutation(internal.agents.create, agentArgs({ systemPrompt: tooLong })));
    expect(data).toMatchObject({
      code: "INVALID_ARGUMENT",
      field: "systemPrompt",
      limit: LIMITS.systemPrompt,
      actual: LIMITS.systemPrompt + 1,
    });
  });

  test("accepts a systemPrompt exactly at the limit", async () => {
    const t = newBackend();
    const id = await t.mutation(internal.agents.create, agentArgs({ systemPrompt: "y".repeat(LIMITS.systemPrompt) }));
    expect(await t.query(internal.agents.get, { agentId: id })).not.toBeNull();
  });

  test("rejects an unknown domain and an empty name", async () => {
    const t = newBackend();
    const badDomain = await errorData(
      t.mutation(internal.agents.create, agentArgs({ config: { ...agentArgs().config, domain: "constructor" } })),
    );
    expect(badDomain).toMatchObject({ code: "INVALID_ARGUMENT", field: "config.domain" });
    const emptyName = await errorData(t.mutation(internal.agents.create, agentArgs({ name: "" })));
    expect(emptyName).toMatchObject({ code: "INVALID_ARGUMENT", field: "name" });
    expect(await t.query(internal.agents.changedSince, { since: 0 })).toEqual([]);
  });
});

describe("update", () => {
  test("rebuilds fullPrompt from the merged document and bumps updatedAt", async () => {
    const t = newBackend();
    const id = await t.mutation(internal.agents.create, agentArgs());
    const before = await t.query(internal.agents.get, { agentId: id });
    await t.mutation(internal.agents.update, { agentId: id, systemPrompt: "Only take messages." });
    const after = await t.query(internal.agents.get, { agentId: id });
    expect(after?.systemPrompt).toBe("Only take messages.");
    expect(after?.name).toBe("Priya");
    expect(after?.fullPrompt).toBe(buildFullPrompt({ ...agentArgs(), systemPrompt: "Only take messages." }));
    expect(after!.updatedAt).toBeGreaterThan(before!.updatedAt);
  });

  test("keeps updatedAt strictly increasing for edits within one millisecond", async () => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date("2026-01-01T00:00:00Z"));
    const t = newBackend();
    const id = await t.mutation(internal.agents.create, agentArgs());
    const stamps: number[] = [];
    for (let i = 0; i < 5; i++) {
      stamps.push((await t.mutation(internal.agents.update, { agentId: id, name: `Priya ${i}` })).updatedAt);
    }
    for (let i = 1; i < stamps.length; i++) expect(stamps[i]).toBeGreaterThan(stamps[i - 1]);
  });

  test("names a missing or malformed agent in a typed error", async () => {
    const t = newBackend();
    const data = await errorData(t.mutation(internal.agents.update, { agentId: "not-an-id", name: "x" }));
    expect(data).toMatchObject({ code: "AGENT_NOT_FOUND", agentId: "not-an-id" });
  });

  test("rejects an oversized systemPrompt and leaves the document unchanged", async () => {
    const t = newBackend();
    const id = await t.mutation(internal.agents.create, agentArgs());
    const before = await t.query(internal.agents.get, { agentId: id });
    await errorData(
      t.mutation(internal.agents.update, { agentId: id, systemPrompt: "z".repeat(LIMITS.systemPrompt + 1) }),
    );
    expect(await t.query(internal.agents.get, { agentId: id })).toEqual(before);
  });
});

describe("get", () => {
  test("answers null for a malformed id and for a deleted agent", async () => {
    const t = newBackend();
    expect(await t.query(internal.agents.get, { agentId: "garbage" })).toBeNull();
    expect(await t.query(internal.agents.get, { agentId: "" })).toBeNull();
    const id = await t.mutation(internal.agents.create, agentArgs());
    await t.run(async (ctx) => ctx.db.delete(id));
    expect(await t.query(internal.agents.get, { agentId: id })).toBeNull();
  });
});

describe("changedSince", () => {
  test("lists {_id, updatedAt} at or after since, ascending, at most limit", async () => {
    vi.useFakeTimers();
    const t = newBackend();
    const ids: Id<"agents">[] = [];
    for (let i = 0; i < 5; i++) {
      vi.setSystemTime(1_000_000 + i * 10);
      ids.push(await t.mutation(internal.agents.create, agentArgs({ name: `a${i}` })));
    }
    const all = await t.query(internal.agents.changedSince, { since: 1_000_010 });
    expect(all).toEqual([1, 2, 3, 4].map((i) => ({ _id: ids[i], updatedAt: 1_000_000 + i * 10 })));
    const two = await t.query(internal.agents.changedSince, { since: 0, limit: 2 });
    expect(two.map((row) => row._id)).toEqual([ids[0], ids[1]]);
  });

  test("rejects a limit outside 1..1000", async () => {
    const t = newBackend();
    for (const limit of [0, 1001, 2.5]) {
      const data = await errorData(t.query(internal.agents.changedSince, { since: 0, limit }));
      expect(data).toMatchObject({ code: "INVALID_ARGUMENT", field: "limit" });
    }
  });

  test("an edited agent moves to the end of the feed with its new stamp", async () => {
    vi.useFakeTimers();
    vi.setSystemTime(2_000_000);
    const t = newBackend();
    const first = await t.mutation(internal.agents.create, agentArgs({ name: "first" }));
    await t.mutation(internal.agents.create, agentArgs({ name: "second" }));
    const { updatedAt } = await t.mutation(internal.agents.update, { agentId: first, name: "first again" });
    const feed = await t.query(internal.agents.changedSince, { since: 0 });
    expect(feed[feed.length - 1]).toEqual({ _id: first, updatedAt });
  });
});

describe("savePrompt", () => {
  async function legacyAgent(t: ReturnType<typeof newBackend>) {
    return await t.run(async (ctx) =>
      ctx.db.insert("agents", { ...agentArgs(), createdAt: 5, updatedAt: 5 }),
    );
  }

  test("stores the worker's prompt for the version it was built from without bumping updatedAt", async () => {
    const t = newBackend();
    const id = await legacyAgent(t);
    const prompt = buildFullPrompt(agentArgs());
    const result = await t.mutation(internal.agents.savePrompt, {
      agentId: id,
      fullPrompt: prompt,
      builtFromUpdatedAt: 5,
      templateVersion: TEMPLATE_VERSION,
    });
    expect(result).toEqual({ written: true, reason: "saved" });
    const doc = await t.query(internal.agents.get, { agentId: id });
    expect(doc).toMatchObject({ fullPrompt: prompt, updatedAt: 5, templateVersion: TEMPLATE_VERSION });
  });

  test("a write-back that loses the race to an edit keeps the edit", async () => {
    const t = newBackend();
    const id = await legacyAgent(t);
    const stalePrompt = buildFullPrompt(agentArgs());
    await t.mutation(internal.agents.update, { agentId: id, systemPrompt: "Edited while the worker built." });
    const edited = await t.query(internal.agents.get, { agentId: id });
    const result = await t.mutation(internal.agents.savePrompt, {
      agentId: id,
      fullPrompt: stalePrompt,
      builtFromUpdatedAt: 5,
    });
    expect(result).toEqual({ written: false, reason: "superseded" });
    expect(await t.query(internal.agents.get, { agentId: id })).toEqual(edited);
  });

  test("does not replace a prompt built from newer templates", async () => {
    const t = newBackend();
    const id = await t.run(async (ctx) =>
      ctx.db.insert("agents", {
        ...agentArgs(),
        fullPrompt: "built by newer templates",
        templateVersion: TEMPLATE_VERSION + 1,
        createdAt: 5,
        updatedAt: 5,
      }),
    );
    const result = await t.mutation(internal.agents.savePrompt, {
      agentId: id,
      fullPrompt: "older",
      builtFromUpdatedAt: 5,
      templateVersion: TEMPLATE_VERSION,
    });
    expect(result.written).toBe(false);
    expect((await t.query(internal.agents.get, { agentId: id }))?.fullPrompt).toBe("built by newer templates");
  });

  test("reports a missing agent and rejects an oversized prompt", async () => {
    const t = newBackend();
    expect(
      await t.mutation(internal.agents.savePrompt, { agentId: "nope", fullPrompt: "p", builtFromUpdatedAt: 1 }),
    ).toEqual({ written: false, reason: "agent_not_found" });
    const id = await legacyAgent(t);
    const data = await errorData(
      t.mutation(internal.agents.savePrompt, {
        agentId: id,
        fullPrompt: "p".repeat(LIMITS.fullPrompt + 1),
        builtFromUpdatedAt: 5,
      }),
    );
    expect(data).toMatchObject({ code: "INVALID_ARGUMENT", field: "fullPrompt" });
  });
});

describe("remove", () => {
  test("leaves a tombstone with deletedAt and a bumped updatedAt that get answers null for", async () => {
    vi.useFakeTimers();
    vi.setSystemTime(3_000_000);
    const t = newBackend();
    const id = await t.mutation(internal.agents.create, agentArgs());
    vi.setSystemTime(3_000_500);
    const removed = await t.mutation(internal.agents.remove, { agentId: id });
    expect(removed).toEqual({ updatedAt: 3_000_500, deletedAt: 3_000_500 });
    expect(await t.query(internal.agents.get, { agentId: id })).toBeNull();
    const doc = await t.run(async (ctx) => ctx.db.get(id));
    expect(doc).toMatchObject({ deletedAt: 3_000_500, updatedAt: 3_000_500, name: "Priya" });
  });

  test("bumps updatedAt even when removed in the millisecond it was written", async () => {
    vi.useFakeTimers();
    vi.setSystemTime(3_100_000);
    const t = newBackend();
    const id = await t.mutation(internal.agents.create, agentArgs());
    const { updatedAt } = await t.mutation(internal.agents.remove, { agentId: id });
    expect(updatedAt).toBe(3_100_001);
  });

  test("reports the delete in changedSince as a row with deleted: true", async () => {
    vi.useFakeTimers();
    vi.setSystemTime(4_000_000);
    const t = newBackend();
    const kept = await t.mutation(internal.agents.create, agentArgs({ name: "kept" }));
    const gone = await t.mutation(internal.agents.create, agentArgs({ name: "gone" }));
    vi.setSystemTime(4_000_100);
    const { updatedAt } = await t.mutation(internal.agents.remove, { agentId: gone });
    expect(await t.query(internal.agents.changedSince, { since: 0 })).toEqual([
      { _id: kept, updatedAt: 4_000_000 },
      { _id: gone, updatedAt, deleted: true },
    ]);
  });

  test("list skips a deleted agent", async () => {
    const t = newBackend();
    const kept = await t.mutation(internal.agents.create, agentArgs({ name: "kept" }));
    const gone = await t.mutation(internal.agents.create, agentArgs({ name: "gone" }));
    await t.mutation(internal.agents.remove, { agentId: gone });
    const listed = await t.query(internal.agents.list, {});
    expect(listed.map((row) => row._id)).toEqual([kept]);
  });

  test("update and savePrompt refuse a deleted agent and leave the tombstone as it was", async () => {
    const t = newBackend();
    const id = await t.mutation(internal.agents.create, agentArgs());
    await t.mutation(internal.agents.remove, { agentId: id });
    const tombstone = await t.run(async (ctx) => ctx.db.get(id));
    const data = await errorData(t.mutation(internal.agents.update, { agentId: id, name: "Back" }));
    expect(data).toMatchObject({ code: "AGENT_NOT_FOUND", agentId: id });
    const saved = await t.mutation(internal.agents.savePrompt, {
      agentId: id,
      fullPrompt: "resurrected",
      builtFromUpdatedAt: tombstone!.updatedAt,
    });
    expect(saved).toEqual({ written: false, reason: "agent_not_found" });
    expect(await t.run(async (ctx) => ctx.db.get(id))).toEqual(tombstone);
  });

  test("removing twice answers the first removal and removing an unknown agent fails", async () => {
    const t = newBackend();
    const id = await t.mutation(internal.agents.create, agentArgs());
    const first = await t.mutation(internal.agents.remove, { agentId: id });
    expect(await t.mutation(internal.agents.remove, { agentId: id })).toEqual(first);
    const data = await errorData(t.mutation(internal.agents.remove, { agentId: "garbage" }));
    expect(data).toMatchObject({ code: "AGENT_NOT_FOUND" });
  });

  test("the migration skips a tombstone", async () => {
    const t = newBackend();
    const id = await t.mutation(internal.agents.create, agentArgs());
    await t.mutation(internal.agents.remove, { agentId: id });
    const before = await t.run(async (ctx) => ctx.db.get(id));
    await t.action(internal.agents.rebuildAllPrompts, { force: true });
    expect(await t.run(async (ctx) => ctx.db.get(id))).toEqual(before);
  });
});

describe("argument bounds", () => {
  test("list rejects a limit outside 1..1000 instead of clamping it", async () => {
    const t = newBackend();
    await t.mutation(internal.agents.create, agentArgs());
    for (const limit of [0, 1001, 2.5]) {
      const data = await errorData(t.query(internal.agents.list, { limit }));
      expect(data).toMatchObject({ code: "INVALID_ARGUMENT", field: "limit" });
    }
    expect(await t.query(internal.agents.list, { limit: 1 })).toHaveLength(1);
  });

  test("a migration batch larger than the bound is refused", async () => {
    const t = newBackend();
    const data = await errorData(
      t.mutation(internal.agents.rebuildBatch, { cursor: null, force: false, batchSize: LIMITS.rebuildBatchMax + 1 }),
    );
    expect(data).toMatchObject({ code: "INVALID_ARGUMENT", field: "batchSize", limit: LIMITS.rebuildBatchMax });
  });
});

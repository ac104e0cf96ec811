import { ConvexError, v, type Infer } from "convex/values";
import { internalAction, internalMutation, internalQuery, type ActionCtx, type DatabaseReader } from "./_generated/server";
import { internal } from "./_generated/api";
import type { Doc } from "./_generated/dataModel";
import { agentConfig, agentFields } from "./schema";
import { buildFullPrompt, PromptBuildError, TEMPLATE_VERSION } from "./lib/promptBuilder";
import { checkConfig, checkCount, checkLength, LIMITS } from "./lib/limits";

// Every function here is internal: an agent's prompt is a business secret, so only a
// caller holding the deploy key (`Authorization: Convex <key>`) may read or write it.

const REBUILD_BATCH_SIZE = 100;

/**
 * How far back a poller of `changedSince` must re-read. A transaction's Date.now()
 * is fixed when it starts, so a write stamped T can commit after a write stamped
 * T + d was already read. Convex bounds a mutation's run time (1 s of user code,
 * plus commit and retries), so a window of 10 s covers every write that can still
 * commit with an older stamp. Poll with `since = maxSeenUpdatedAt - WINDOW` and
 * deduplicate by (_id, updatedAt): nothing is missed.
 */
export const CHANGED_SINCE_OVERLAP_MS = 10_000;

/** A later stamp than the document's current one, even for two edits in one ms. */
function nextUpdatedAt(previous: number | undefined): number {
  const now = Date.now();
  return previous === undefined ? now : Math.max(now, previous + 1);
}

function buildOrThrow(agent: Parameters<typeof buildFullPrompt>[0]): string {
  try {
    return buildFullPrompt(agent);
  } catch (error) {
    if (error instanceof PromptBuildError) {
      throw new ConvexError({ code: "PROMPT_BUILD_FAILED", message: error.message });
    }
    throw error;
  }
}

export const create = internalMutation({
  args: {
    organizationId: v.string(),
    name: v.string(),
    systemPrompt: v.string(),
    config: agentConfig,
  },
  returns: v.id("agents"),
  handler: async (ctx, args) => {
    checkLength("organizationId", args.organizationId, LIMITS.organizationId);
    checkLength("name", args.name, LIMITS.name);
    checkLength("systemPrompt", args.systemPrompt, LIMITS.systemPrompt);
    checkConfig(args.config);
    const now = Date.now();
    return await ctx.db.insert("agents", {
      ...args,
      fullPrompt: buildOrThrow(args),
      promptVersion: now,
      templateVersion: TEMPLATE_VERSION,
      createdAt: now,
      updatedAt: now,
    });
  },
});

export const update = internalMutation({
  args: {
    agentId: v.string(),
    name: v.optional(v.string()),
    systemPrompt: v.optional(v.string()),
    config: v.optional(agentConfig),
  },
  returns: v.object({ updatedAt: v.number() }),
  handler: async (ctx, { agentId, ...changes }) => {
    const agent = await loadAgent(ctx, agentId);
    if (agent === null) {
      throw new ConvexError({ code: "AGENT_NOT_FOUND", agentId, message: `agent ${agentId} not found` });
    }
    if (changes.name !== undefined) checkLength("name", changes.name, LIMITS.name);
    if (changes.systemPrompt !== undefined) {
      checkLength("systemPrompt", changes.systemPrompt, LIMITS.systemPrompt);
    }
    if (changes.config !== undefined) checkConfig(changes.config);
    const next = {
      name: changes.name ?? agent.name,
      systemPrompt: changes.systemPrompt ?? agent.systemPrompt,
      config: changes.config ?? agent.config,
    };
    const updatedAt = nextUpdatedAt(agent.updatedAt);
    await ctx.db.patch(agent._id, {
      ...next,
      fullPrompt: buildOrThrow(next),
      promptVersion: Date.now(),
      templateVersion: TEMPLATE_VERSION,
      updatedAt,
    });
    return { updatedAt };
  },
});

/** The document, tombstone included (only `remove` and the change feed want those). */
async function loadDocument(ctx: { db: DatabaseReader }, agentId: string): Promise<Doc<"agents"> | null> {
  const id = ctx.db.normalizeId("agents", agentId);
  return id === null ? null : await ctx.db.get(id);
}

/** The live agent: a deleted one reads as absent everywhere. */
async function loadAgent(ctx: { db: DatabaseReader }, agentId: string): Promise<Doc<"agents"> | null> {
  const doc = await loadDocument(ctx, agentId);
  return doc === null || doc.deletedAt !== undefined ? null : doc;
}

/**
 * Delete an agent, leaving a tombstone: the document keeps its id with `deletedAt` set
 * and a bumped `updatedAt`, so `changedSince` reports the delete to every worker
 * (a row with `deleted: true`) and each drops the agent from its caches. Removing a
 * deleted agent again changes nothing and answers the first removal's stamps.
 */
export const remove = internalMutation({
  args: { agentId: v.string() },
  returns: v.object({ updatedAt: v.number(), deletedAt: v.number() }),
  handler: async (ctx, { agentId }) => {
    const doc = await loadDocument(ctx, agentId);
    if (doc === null) {
      throw new ConvexError({ code: "AGENT_NOT_FOUND", agentId, message: `agent ${agentId} not found` });
    }
    if (doc.deletedAt !== undefined) return { updatedAt: doc.updatedAt, deletedAt: doc.deletedAt };
    const updatedAt = nextUpdatedAt(doc.updatedAt);
    const deletedAt = Date.now();
    await ctx.db.patch(doc._id, { deletedAt, updatedAt });
    return { updatedAt, deletedAt };
  },
});

const agentDocument = v.object({ _id: v.id("agents"), _creationTime: v.number(), ...agentFields });

export const get = internalQuery({
  args: { agentId: v.string() },
  returns: v.union(agentDocument, v.null()),
  handler: async (ctx, { agentId }) => await loadAgent(ctx, agentId),
});

export const changedSince = internalQuery({
  args: { since: v.number(), limit: v.optional(v.number()) },
  returns: v.array(v.object({ _id: v.id("agents"), updatedAt: v.number(), deleted: v.optional(v.literal(true)) })),
  handler: async (ctx, { since, limit }) => {
    const take = checkCount("limit", limit, LIMITS.changedSinceMax, LIMITS.changedSinceMax);
    const rows = await ctx.db
      .query("agents")
      .withIndex("by_updatedAt", (q) => q.gte("updatedAt", since))
      .order("asc")
      .take(take);
    return rows.map((row) =>
      row.deletedAt === undefined
        ? { _id: row._id, updatedAt: row.updatedAt }
        : { _id: row._id, updatedAt: row.updatedAt, deleted: true as const },
    );
  },
});

export const list = internalQuery({
  args: { organizationId: v.optional(v.string()), limit: v.optional(v.number()) },
  returns: v.array(
    v.object({
      _id: v.id("agents"),
      organizationId: v.string(),
      name: v.string(),
      domain: v.string(),
      updatedAt: v.number(),
      hasFullPrompt: v.boolean(),
    }),
  ),
  handler: async (ctx, { organizationId, limit }) => {
    const take = checkCount("limit", limit, 100, LIMITS.listMax);
    const rows =
      organizationId === undefined
        ? await ctx.db.query("agents").take(take)
        : await ctx.db
            .query("agents")
            .withIndex("by_organizationId", (q) => q.eq("organizationId", organizationId))
            .take(take);
    // Tombstones are skipped, so a page may hold fewer than `limit` agents.
    return rows.filter((row) => row.deletedAt === undefined).map((row) => ({
      _id: row._id,
      organizationId: row.organizationId,
      name: row.name,
      domain: row.config.domain,
      updatedAt: row.updatedAt,
      hasFullPrompt: row.fullPrompt !== undefined,
    }));
  },
});

export const savePrompt = internalMutation({
  args: {
    agentId: v.string(),
    fullPrompt: v.string(),
    builtFromUpdatedAt: v.number(),
    templateVersion: v.optional(v.number()),
  },
  returns: v.object({
    written: v.boolean(),
    reason: v.union(v.literal("saved"), v.literal("agent_not_found"), v.literal("superseded")),
  }),
  handler: async (ctx, { agentId, fullPrompt, builtFromUpdatedAt, templateVersion }) => {
    checkLength("fullPrompt", fullPrompt, LIMITS.fullPrompt);
    const agent = await loadAgent(ctx, agentId);
    if (agent === null) return { written: false, reason: "agent_not_found" as const };
    // A newer edit (or a prompt from newer templates) is never overwritten.
    const newerTemplates =
      agent.fullPrompt !== undefined && (agent.templateVersion ?? 0) > (templateVersion ?? 0);
    if (agent.updatedAt !== builtFromUpdatedAt || newerTemplates) {
      return { written: false, reason: "superseded" as const };
    }
    // updatedAt stays: the agent did not change, its cache key must not either.
    await ctx.db.patch(agent._id, { fullPrompt, promptVersion: Date.now(), templateVersion });
    return { written: true, reason: "saved" as const };
  },
});

const batchResult = v.object({
  seen: v.number(),
  rebuilt: v.number(),
  skipped: v.number(),
  failed: v.number(),
  continueCursor: v.string(),
  isDone: v.boolean(),
});

/** One transaction of the migration: at most REBUILD_BATCH_SIZE agents. */
export const rebuildBatch = internalMutation({
  args: {
    cursor: v.union(v.string(), v.null()),
    force: v.boolean(),
    organizationId: v.optional(v.string()),
    batchSize: v.optional(v.number()),
  },
  returns: batchResult,
  handler: async (ctx, { cursor, force, organizationId, batchSize }) => {
    const numItems = checkCount("batchSize", batchSize, REBUILD_BATCH_SIZE, LIMITS.rebuildBatchMax);
    const query =
      organizationId === undefined
        ? ctx.db.query("agents")
        : ctx.db.query("agents").withIndex("by_organizationId", (q) => q.eq("organizationId", organizationId));
    const page = await query.paginate({ cursor, numItems });
    let rebuilt = 0;
    let skipped = 0;
    let failed = 0;
    for (const agent of page.page) {
      if (agent.deletedAt !== undefined) {
        skipped += 1; // a tombstone has no prompt to rebuild
        continue;
      }
      const current = agent.fullPrompt !== undefined && agent.templateVersion === TEMPLATE_VERSION;
      if (current && !force) {
        skipped += 1;
        continue;
      }
      let fullPrompt: string;
      try {
        fullPrompt = buildFullPrompt(agent);
      } catch (error) {
        if (!(error instanceof PromptBuildError)) throw error;
        console.warn(`rebuild: agent ${agent._id} cannot be built: ${error.message}`);
        failed += 1;
        continue;
      }
      // A changed prompt is a new version of the agent: bump updatedAt so every
      // cache keyed agentId:updatedAt lets go of the old one.
      const changed = fullPrompt !== agent.fullPrompt;
      await ctx.db.patch(agent._id, {
        fullPrompt,
        promptVersion: Date.now(),
        templateVersion: TEMPLATE_VERSION,
        ...(changed ? { updatedAt: nextUpdatedAt(agent.updatedAt) } : {}),
      });
      rebuilt += 1;
    }
    return {
      seen: page.page.length,
      rebuilt,
      skipped,
      failed,
      continueCursor: page.continueCursor,
      isDone: page.isDone,
    };
  },
});

const rebuildResult = v.object({
  success: v.boolean(),
  total: v.number(),
  rebuilt: v.number(),
  skipped: v.number(),
  failed: v.number(),
  message: v.string(),
});

type RebuildResult = Infer<typeof rebuildResult>;
type BatchResult = Infer<typeof batchResult>;

async function rebuildAll(ctx: ActionCtx, force: boolean, organizationId?: string): Promise<RebuildResult> {
  let cursor: string | null = null;
  const totals = { total: 0, rebuilt: 0, skipped: 0, failed: 0 };
  for (;;) {
    const batch: BatchResult = await ctx.runMutation(internal.agents.rebuildBatch, { cursor, force, organizationId });
    totals.total += batch.seen;
    totals.rebuilt += batch.rebuilt;
    totals.skipped += batch.skipped;
    totals.failed += batch.failed;
    if (batch.isDone) break;
    cursor = batch.continueCursor;
  }
  const failedNote = totals.failed > 0 ? `, ${totals.failed} failed to build (see logs)` : "";
  return {
    success: totals.failed === 0,
    ...totals,
    message: `Rebuilt ${totals.rebuilt} prompts, skipped ${totals.skipped} agents that already had current prompts${failedNote}`,
  };
}

export const rebuildAllPrompts = internalAction({
  args: { force: v.optional(v.boolean()) },
  returns: rebuildResult,
  handler: async (ctx, { force }): Promise<RebuildResult> => await rebuildAll(ctx, force ?? false),
});

export const rebuildPromptsForOrganization = internalAction({
  args: { organizationId: v.string(), force: v.optional(v.boolean()) },
  returns: rebuildResult,
  handler: async (ctx, { organizationId, force }): Promise<RebuildResult> =>
    await rebuildAll(ctx, force ?? false, organizationId),
});

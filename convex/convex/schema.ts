import { defineSchema, defineTable } from "convex/server";
import { v, type Infer } from "convex/values";

// What a voice agent is configured with. `domain` names a template in
// prompts/templates.json; `pipeline` picks the worker's model stack.
export const agentConfig = v.object({
  domain: v.string(),
  language: v.string(),
  voice: v.string(),
  model: v.string(),
  pipeline: v.optional(v.union(v.literal("realtime"), v.literal("pipeline"))),
  greeting: v.optional(v.string()),
  temperature: v.optional(v.number()),
});

export type AgentConfig = Infer<typeof agentConfig>;

// The agents table's fields, shared by the schema and by return validators.
export const agentFields = {
    organizationId: v.string(),
    name: v.string(),
    systemPrompt: v.string(),
    config: agentConfig,
    // Prebuilt by every write path; absent only on legacy agents.
    fullPrompt: v.optional(v.string()),
    // When fullPrompt was last built (ms since epoch).
    promptVersion: v.optional(v.number()),
    // prompts/templates.json "version" that built fullPrompt: lets the migration
    // find prompts built from outdated templates.
    templateVersion: v.optional(v.number()),
    createdAt: v.number(),
    // Strictly increasing per document; the worker's cache key is agentId:updatedAt.
    updatedAt: v.number(),
    // Set by agents:remove. A deleted agent stays as a tombstone so that the change
    // feed can tell every worker to drop it; every reader treats it as absent.
    deletedAt: v.optional(v.number()),
};

export default defineSchema({
  agents: defineTable(agentFields)
    .index("by_organizationId", ["organizationId"])
    .index("by_updatedAt", ["updatedAt"]),
});

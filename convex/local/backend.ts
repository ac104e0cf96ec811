import { convexTest } from "convex-test";
import { makeFunctionReference } from "convex/server";
import { ConvexError, jsonToConvex, type Value } from "convex/values";
import type { IncomingMessage, ServerResponse } from "node:http";
import { timingSafeEqual } from "node:crypto";
import schema from "../convex/schema";
import { modules, MODULES_ROOT } from "./modules";
import { exportValueText, isFormat, serializeEnvelope, type Format } from "./values";

export type SeedData = Record<string, Record<string, unknown>[]>;
type Kind = "query" | "mutation" | "action";

export type BackendOptions = {
  deployKey: string;
  seed?: SeedData;
  latencyMs?: number;
};

type RegisteredFunction = {
  isQuery?: boolean;
  isMutation?: boolean;
  isAction?: boolean;
  isInternal?: boolean;
  isPublic?: boolean;
};

/** A request-level failure: Convex answers these with an HTTP status and {code, message}. */
class RequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A function-level failure: Convex answers these with {status: "error", ...}. */
class FunctionError extends Error {}

function kindOf(fn: RegisteredFunction): Kind | null {
  if (fn.isQuery) return "query";
  if (fn.isMutation) return "mutation";
  if (fn.isAction) return "action";
  return null;
}

/** "agents:get", "agents.js:get", "agents" (default export) -> ["agents", "get"]. */
function splitPath(path: string): [string, string] {
  const [file, name = "default"] = path.split(":", 2);
  return [file.replace(/\.(js|ts)$/, ""), name];
}

function sameKey(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  sendText(res, status, JSON.stringify(body));
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The project's real Convex functions (run by convex-test) behind Convex's HTTP API.
 * One instance is one deployment: its database lives as long as the instance.
 */
export class LocalBackend {
  private test: ReturnType<typeof convexTest>;
  private counts = new Map<string, number>();
  private total = 0;
  private readonly modulesByPath = new Map<string, () => Promise<unknown>>(
    Object.entries(modules).map(([key, load]) => [key.slice(MODULES_ROOT.length).replace(/\.[^.]+$/, ""), load]),
  );

  constructor(private readonly options: BackendOptions) {
    this.test = convexTest(schema, modules);
  }

  /** Load the seed into a fresh database. */
  async start(): Promise<void> {
    this.test = convexTest(schema, modules);
    const seed = this.options.seed ?? {};
    for (const [table, documents] of Object.entries(seed)) {
      documents.forEach((doc, index) => {
        if ("_id" in doc || "_creationTime" in doc) {
          throw new Error(`seed document ${index} of table ${table} carries a system field; the backend assigns _id itself`);
        }
      });
      await this.test.run(async (ctx) => {
        for (const doc of documents) {
          // Seed files are trusted input: the schema validates every document.
          await ctx.db.insert(table as "agents", doc as never);
        }
      });
    }
  }

  stats(): { total: number; byPath: Record<string, number> } {
    return { total: this.total, byPath: Object.fromEntries([...this.counts].sort()) };
  }

  async reset(data: boolean): Promise<void> {
    this.counts.clear();
    this.total = 0;
    if (data) await this.start();
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    try {
      if (url.pathname.startsWith("/_local/")) this.requireDeployKey(req.headers.authorization);
      if (req.method === "GET" && url.pathname === "/_local/stats") return sendJson(res, 200, this.stats());
      if (req.method === "POST" && url.pathname === "/_local/reset") {
        await this.reset(url.searchParams.get("data") === "1");
        return sendJson(res, 200, this.stats());
      }
      if (req.method === "GET" && url.pathname === "/version") return sendJson(res, 200, "local-convex-test");
      if (!url.pathname.startsWith("/api/")) throw new RequestError(404, "NotFound", `no route ${url.pathname}`);
      if (this.options.latencyMs) await new Promise((r) => setTimeout(r, this.options.latencyMs));
      if (req.method !== "POST") throw new RequestError(405, "MethodNotAllowed", "use POST");
      const body = await this.parseBody(req);
      const route = url.pathname.slice("/api/".length);
      let expected: Kind | null;
      let path: unknown;
      if (route === "query" || route === "mutation" || route === "action") {
        expected = route;
        path = body.path;
      } else if (route.startsWith("run/")) {
        expected = null;
        const parts = route.slice("run/".length).split("/");
        path = `${parts.slice(0, -1).join("/")}:${parts[parts.length - 1]}`;
      } else {
        throw new RequestError(404, "NotFound", `no route ${url.pathname}`);
      }
      if (typeof path !== "string" || path.length === 0) {
        throw new RequestError(400, "BadJsonBody", "body.path must be a function path such as agents:get");
      }
      // Like Convex: no format means clean JSON for a client that does not name an old version.
      const format = body.format ?? "json";
      if (!isFormat(format)) {
        throw new RequestError(400, "BadFormat", `format param must be one of [\`json\`]. Got ${String(format)}`);
      }
      const admin = this.checkAuth(req.headers.authorization);
      return sendText(res, 200, serializeEnvelope(await this.call(path, body.args ?? {}, format, expected, admin)));
    } catch (error) {
      if (error instanceof RequestError) return sendJson(res, error.status, { code: error.code, message: error.message });
      console.error("local backend: internal error", error);
      return sendJson(res, 500, { code: "InternalServerError", message: String(error) });
    }
  }

  private async parseBody(req: IncomingMessage): Promise<Record<string, unknown>> {
    const text = await readBody(req);
    let parsed: unknown;
    try {
      parsed = text.length === 0 ? {} : JSON.parse(text);
    } catch {
      throw new RequestError(400, "BadJsonBody", "request body is not JSON");
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new RequestError(400, "BadJsonBody", "request body must be a JSON object");
    }
    return parsed as Record<string, unknown>;
  }

  /** The local control routes (`/_local/*`) answer the deploy key only: they reset data. */
  private requireDeployKey(header: string | undefined): void {
    if (!this.checkAuth(header)) {
      throw new RequestError(401, "MissingAdminKey", "/_local/ routes require Authorization: Convex <deploy key>");
    }
  }

  /** True for the deploy key; false for anonymous or user (Bearer) callers. */
  private checkAuth(header: string | undefined): boolean {
    if (header === undefined || header.startsWith("Bearer ")) return false;
    if (header.startsWith("Convex ") && sameKey(header.slice("Convex ".length), this.options.deployKey)) return true;
    throw new RequestError(401, "BadAdminKey", "The provided admin key was invalid for this instance");
  }

  private async call(path: string, rawArgs: unknown, format: Format, expected: Kind | null, admin: boolean) {
    const [file, name] = splitPath(path);
    const canonical = `${file}:${name}`;
    this.total += 1;
    this.counts.set(canonical, (this.counts.get(canonical) ?? 0) + 1);
    try {
      const fn = await this.lookup(file, name, admin);
      const kind = kindOf(fn);
      if (kind === null || (expected !== null && kind !== expected)) {
        throw new FunctionError(`Function ${canonical} is not a ${expected ?? "Convex function"}`);
      }
      let args: Value;
      try {
        args = jsonToConvex(rawArgs as never);
      } catch (error) {
        throw new FunctionError(`Invalid args for ${canonical}: ${(error as Error).message}`);
      }
      // convex-test types its calls per function; here the path is only known at run time.
      const runner = this.test as unknown as Record<Kind, (ref: unknown, args: Value) => Promise<Value>>;
      const value = await runner[kind](makeFunctionReference(canonical), args);
      // Convex omits `logLines` when there are none, and writes values with its own number format.
      return { status: "success", value: exportValueText(value, format) };
    } catch (error) {
      if (error instanceof RequestError) throw error;
      const data = error instanceof ConvexError ? (error.data as Value) : undefined;
      const message = error instanceof Error ? error.message : String(error);
      return {
        status: "error",
        errorMessage: data !== undefined ? `Uncaught ConvexError: ${message}` : `Server Error\n${message}`,
        ...(data !== undefined ? { errorData: exportValueText(data, format) } : {}),
      };
    }
  }

  private async lookup(file: string, name: string, admin: boolean): Promise<RegisteredFunction> {
    const missing = new FunctionError(
      `Could not find public function for '${file}:${name}'. Did you forget to run \`npx convex dev\` or \`npx convex deploy\`?`,
    );
    const load = this.modulesByPath.get(file);
    if (load === undefined || file.startsWith("_generated")) throw missing;
    const mod = (await load()) as Record<string, RegisteredFunction | undefined>;
    const fn = mod[name];
    if (fn === undefined || kindOf(fn) === null) throw missing;
    // Like Convex, an internal function is invisible without the deploy key.
    if (fn.isInternal && !admin) throw missing;
    return fn;
  }
}

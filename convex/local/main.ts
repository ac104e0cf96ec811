// Entry point of `npm --prefix convex run local -- --port PORT [--seed FILE] [--latency-ms N]`.
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { LocalBackend, type SeedData } from "./backend";

// The key a local backend accepts when CONVEX_DEPLOY_KEY is unset (see .env.example).
export const DEFAULT_LOCAL_DEPLOY_KEY = "local-dev-deploy-key";

function fail(message: string): never {
  console.error(`local backend: ${message}`);
  process.exit(2);
}

/** True for an address only this machine can reach: 127.0.0.0/8, ::1, localhost. */
function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (bare === "localhost" || bare === "::1" || bare === "0:0:0:0:0:0:0:1") return true;
  const v4 = bare.replace(/^::ffff:/, "");
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

function loadSeed(file: string): SeedData {
  // npm runs scripts from convex/; INIT_CWD is where the user typed the command.
  const path = resolve(process.env.INIT_CWD ?? process.cwd(), file);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    fail(`cannot read seed ${path}: ${(error as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    fail(`seed ${path} must be a JSON object {table: [documents...]}`);
  }
  for (const [table, docs] of Object.entries(parsed)) {
    if (!Array.isArray(docs)) fail(`seed ${path}: table ${table} must be an array of documents`);
  }
  return parsed as SeedData;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: "string" },
      seed: { type: "string" },
      "latency-ms": { type: "string" },
      host: { type: "string", default: "127.0.0.1" },
    },
  });
  const port = Number(values.port ?? "");
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail("--port PORT is required (0 picks a free port)");
  const latencyMs = Number(values["latency-ms"] ?? "0");
  if (!Number.isFinite(latencyMs) || latencyMs < 0) fail("--latency-ms must be a non-negative number");

  const givenKey = process.env.CONVEX_DEPLOY_KEY;
  if (!isLoopback(values.host) && (!givenKey || givenKey === DEFAULT_LOCAL_DEPLOY_KEY)) {
    fail(`--host ${values.host} is not loopback: set CONVEX_DEPLOY_KEY to a key of your own, the well-known default would be exposed`);
  }
  const backend = new LocalBackend({
    deployKey: givenKey || DEFAULT_LOCAL_DEPLOY_KEY,
    seed: values.seed === undefined ? undefined : loadSeed(values.seed),
    latencyMs,
  });
  try {
    await backend.start();
  } catch (error) {
    fail(`seed rejected: ${(error as Error).message}`);
  }
  const server = createServer((req, res) => void backend.handle(req, res));
  server.keepAliveTimeout = 60_000;
  server.listen(port, values.host, () => {
    const address = server.address();
    const actual = typeof address === "object" && address !== null ? address.port : port;
    console.log(`ready http://${values.host}:${actual}`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

void main();

// Reads one JSON agent per stdin line, writes one JSON answer per line:
// {"prompt": "..."} or {"error": "PromptBuildError"}. Lets the Python tests drive the
// TypeScript builder with random agents (tests/test_prompt_parity.py).
import { createInterface } from "node:readline";
import { buildFullPrompt, PromptBuildError } from "../convex/lib/promptBuilder";

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === "") continue;
  let answer: Record<string, string>;
  try {
    answer = { prompt: buildFullPrompt(JSON.parse(line)) };
  } catch (error) {
    answer = { error: error instanceof PromptBuildError ? "PromptBuildError" : `unexpected: ${String(error)}` };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}

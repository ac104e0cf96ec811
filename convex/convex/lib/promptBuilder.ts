// Mirror of prompts/builder.py: the algorithm is documented there. Both are checked
// against prompts/test_vectors.json; keep them line-for-line equivalent.
import templates from "../../../prompts/templates.json";

export class PromptBuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PromptBuildError";
  }
}

type Domain = { label: string; template: string };

const PLACEHOLDER = /\{\{([A-Za-z]+)\}\}/g;

export const TEMPLATE_VERSION: number = templates.version;

function own<T>(table: Record<string, T>, key: string): T | undefined {
  // Plain objects inherit keys such as "constructor": only own keys are templates.
  return Object.prototype.hasOwnProperty.call(table, key) ? table[key] : undefined;
}

function requireStr(value: unknown, field: string): string {
  if (typeof value !== "string") {
    throw new PromptBuildError(
      `agent field '${field}' must be a string, got ${value === null ? "NoneType" : typeof value}`,
    );
  }
  return value;
}

function asciiLower(text: string): string {
  return text.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

function render(template: string, values: Record<string, string>): string {
  return template.replace(PLACEHOLDER, (_match, key: string) => {
    const value = own(values, key);
    if (value === undefined) {
      throw new PromptBuildError(`template uses unknown placeholder {{${key}}}`);
    }
    return value;
  });
}

export type PromptInput = {
  name?: unknown;
  systemPrompt?: unknown;
  config?: unknown;
};

export function buildFullPrompt(agent: PromptInput): string {
  const name = requireStr(agent.name, "name");
  const systemPrompt = requireStr(agent.systemPrompt, "systemPrompt");
  const config = agent.config;
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new PromptBuildError("agent field 'config' must be an object");
  }
  const cfg = config as Record<string, unknown>;
  const domainKey = requireStr(cfg.domain, "config.domain");
  const domain = own<Domain>(templates.domains, domainKey);
  if (domain === undefined) {
    throw new PromptBuildError(`unknown domain '${domainKey}'`);
  }
  const languageTag = requireStr(cfg.language, "config.language");
  const primary = asciiLower(languageTag.split("-")[0]);
  const languageName = own<string>(templates.languages, primary) ?? languageTag;
  let greeting = cfg.greeting;
  if (greeting !== undefined && greeting !== null) {
    greeting = requireStr(greeting, "config.greeting");
  }
  const greetingText = typeof greeting === "string" ? greeting : "";

  const values: Record<string, string> = {
    name,
    domainLabel: domain.label,
    languageName,
    languageTag,
    systemPrompt,
    greeting: greetingText,
  };
  const parts = [
    render(templates.sections.header, values),
    render(domain.template, values),
    render(templates.sections.instructions, values),
    render(templates.sections.voice, values),
  ];
  if (greetingText) {
    parts.push(render(templates.sections.greeting, values));
  }
  return parts.join("\n\n");
}

export function isKnownDomain(domain: string): boolean {
  return own<Domain>(templates.domains, domain) !== undefined;
}

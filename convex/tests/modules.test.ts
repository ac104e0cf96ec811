import { readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { expect, test } from "vitest";
import { modules, MODULES_ROOT } from "../local/modules";

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : [join(dir, entry.name)],
  );
}

test("the local backend's module map lists every Convex module", () => {
  const root = new URL("../convex/", import.meta.url).pathname;
  const onDisk = sources(root)
    .map((path) => relative(root, path))
    .filter((path) => /\.(ts|js)$/.test(path) && !path.endsWith(".d.ts") && path !== "schema.ts")
    .map((path) => MODULES_ROOT + path)
    .sort();
  expect(Object.keys(modules).sort()).toEqual(onDisk);
});

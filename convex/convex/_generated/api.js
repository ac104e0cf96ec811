/* eslint-disable */
/**
 * Generated `api` utility (written to match `npx convex codegen`; regenerate with it
 * when a deployment is configured).
 */
import { anyApi } from "convex/server";

export const api = anyApi;
export const internal = anyApi;

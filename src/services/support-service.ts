import type { ServiceImpl } from "@connectrpc/connect";
import type { SupportService } from "../../gen/autonomy/v1/support_pb.js";
import { ValidationError } from "../domain/errors.js";
import type { SupportBundle } from "../ops/support-bundle.js";

export const DEFAULT_BUNDLE_SINCE_SECONDS = 86_400;
export const MAX_BUNDLE_SINCE_SECONDS = 30 * 86_400;

/** SupportService: lists the parts of a support bundle and assembles one at a time, redacted. */
export function createSupportService(deps: { bundle: SupportBundle; now?: () => number }): ServiceImpl<typeof SupportService> {
  const now = deps.now ?? Date.now;
  return {
    listBundleParts() {
      return { parts: deps.bundle.list() };
    },
    async collectBundlePart(req, ctx) {
      const since = req.sinceSeconds === undefined ? DEFAULT_BUNDLE_SINCE_SECONDS : Number(req.sinceSeconds);
      if (!Number.isInteger(since) || since < 1 || since > MAX_BUNDLE_SINCE_SECONDS) {
        throw new ValidationError("since_seconds", `must be between 1 and ${MAX_BUNDLE_SINCE_SECONDS}`);
      }
      const nowMs = now();
      return deps.bundle.collect(req.name, { sinceMs: nowMs - since * 1000, nowMs, call: ctx });
    },
  };
}

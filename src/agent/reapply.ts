import type { Release } from "../../clients/index.js";
import type { Logger } from "../observability/logger.js";
import type { AgentState } from "./state.js";

/**
 * An operator's request that this node install its desired release again
 * (`autonomy fleet reconcile --strategy reapply`), as the desired-release answer carries it.
 * The agent never retries a release it failed on its own; it does on such a request, once per
 * token: the token is kept in the state file before the install starts, so a restart does not
 * install it a second time. Returns true when the release must be installed now, even if the
 * node reports running it already.
 */
export function takeReapply(state: AgentState, release: Release | undefined, token: string, save: () => void, logger: Logger): boolean {
  if (!release || token === "" || state.reapplyToken === token) return false;
  state.reapplyToken = token;
  if (state.failedReleaseId === release.releaseId) state.failedReleaseId = undefined;
  save();
  logger.info({ release_id: release.releaseId, token }, "the orchestrator asks to install the release again (reconcile --strategy reapply)");
  return true;
}

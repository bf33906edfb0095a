import type { HandlerContext } from "@connectrpc/connect";
import { OPERATOR_HEADER } from "../../clients/index.js";
import type { Actor } from "../domain/audit.js";
import { checkId } from "../domain/fields.js";
import { principalId } from "../domain/identity.js";
import { requestInfoKey } from "../transport/context.js";

export { auditRecord, type Actor } from "../domain/audit.js";

/**
 * Who is calling, for the audit record: the authenticated principal (operator:NAME,
 * node:ID). Without credentials (enforcement off), the operator the autonomy-operator header
 * claims, else anonymous.
 */
export function actorOf(ctx: HandlerContext): Actor {
  const principal = ctx.values.get(requestInfoKey)?.principal;
  if (principal && principal.kind !== "anonymous") return { actor: principalId(principal), source: "api" };
  const claimed = ctx.requestHeader.get(OPERATOR_HEADER)?.trim() ?? "";
  if (claimed !== "") checkId(claimed, OPERATOR_HEADER, false);
  return { actor: claimed === "" ? "anonymous" : claimed, source: "api" };
}

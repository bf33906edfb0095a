import type { HandlerContext } from "@connectrpc/connect";
import { OPERATOR_HEADER } from "../../clients/index.js";
import { checkId } from "../domain/fields.js";
import { principalId } from "../domain/rbac.js";
import type { AuditRow } from "../store/rollout-rows.js";
import { requestInfoKey } from "../transport/context.js";

/** Who made a change and through what, for its audit record. */
export interface Actor {
  actor: string;
  source: string;
}

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

/** An audit record of a successful change. */
export function auditRecord(
  who: Actor,
  what: { eventName: string; category: string; action: string; resourceType: string; resource: string; fields?: object; reason?: string },
  atMs = Date.now(),
): AuditRow {
  return {
    atMs,
    eventName: what.eventName,
    category: what.category,
    action: what.action,
    outcome: "success",
    actor: who.actor,
    resourceType: what.resourceType,
    resource: what.resource,
    source: who.source,
    fieldsJson: JSON.stringify(what.fields ?? {}),
    reason: what.reason ?? "",
  };
}

/**
 * The support bundle's parts that other features add by name: the HA view of this replica and
 * the divergence report (its first pages, with a stated cap).
 */
import { toJson } from "@bufbuild/protobuf";
import { DivergedNodeSchema } from "../../gen/autonomy/v1/operations_pb.js";
import type { HaRuntime } from "../ha/runtime.js";
import { divergencePage, type DivergenceDeps } from "../services/divergence-report.js";
import type { BundlePart } from "./support-bundle.js";

/** Nodes of the divergence report a bundle carries at most; the rest is counted, not listed. */
export const BUNDLE_DIVERGED_NODES = 1_000;
const PAGE = 200;

export function haBundlePart(ha: HaRuntime): BundlePart {
  return {
    name: "ha",
    fileName: "ha.json",
    description: "high availability: mode, leader, epoch, readiness and replication lag",
    collect: () => ha.status(),
  };
}

export function divergenceBundlePart(deps: DivergenceDeps): BundlePart {
  return {
    name: "divergence",
    fileName: "divergence.json",
    description: `nodes whose reported release differs from their desired one, classified with evidence (at most ${BUNDLE_DIVERGED_NODES})`,
    async collect(c) {
      const nodes: unknown[] = [];
      let after: { divergedSinceMs: number; nodeId: string } | undefined;
      let truncated = false;
      do {
        const page = await divergencePage(deps, { divergedAtOrBeforeMs: c.nowMs, after, limit: PAGE });
        for (const n of page.nodes) nodes.push(toJson(DivergedNodeSchema, n));
        after = page.next;
        if (after && nodes.length >= BUNDLE_DIVERGED_NODES) truncated = true;
      } while (after && !truncated);
      return { nodes, truncated, cap: BUNDLE_DIVERGED_NODES };
    },
  };
}

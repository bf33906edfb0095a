import { keepPreviousData, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import type { DivergedNode } from "../../../gen/autonomy/v1/operations_pb.js";
import { api } from "../api.js";
import { useSession } from "../auth.js";
import { ActionButton, ErrorNote, Pager, useNow } from "../components.js";
import { ago, duration, when } from "../format.js";

const POLL_MS = 5000;
const PAGE_SIZE = 50;
/** Thresholds offered, in seconds; the server's default (10 minutes) first. */
const THRESHOLDS: [number, string][] = [
  [600, "10 minutes (default)"],
  [0, "any time"],
  [60, "1 minute"],
  [300, "5 minutes"],
  [1800, "30 minutes"],
  [3600, "1 hour"],
  [6 * 3600, "6 hours"],
  [24 * 3600, "24 hours"],
];

type Strategy = "reapply" | "accept" | "drain";

const STRATEGIES: Record<Strategy, { label: string; does: (n: DivergedNode) => string; doesAll: string; danger?: boolean }> = {
  reapply: {
    label: "Reapply",
    does: (n) => `The agent installs its desired release ${n.desiredReleaseId || "(none)"} again, also one it failed before.`,
    doesAll: "each agent installs its desired release again, also one it failed before.",
  },
  accept: {
    label: "Accept",
    does: (n) =>
      `What the node reports (${n.reportedReleaseId || "nothing"}) becomes its desired release: a pin, removed by the next plan that moves the node or by unpin. Refused when the node reports nothing.`,
    doesAll: "what each node reports becomes its desired release (a pin, removed by the next plan that moves the node or by unpin); a node that reports nothing is skipped.",
  },
  drain: {
    label: "Drain",
    does: () => "The node is drained: no plan moves it until it is undrained (on its node page).",
    doesAll: "each node is drained: no plan moves it until it is undrained.",
    danger: true,
  },
};

interface Filters {
  channel: string;
  olderThan: number;
}

function NodeActions({ n }: { n: DivergedNode }) {
  const queryClient = useQueryClient();
  return (
    <div className="actions row-actions">
      {(Object.keys(STRATEGIES) as Strategy[]).map((strategy) => (
        <ActionButton
          key={strategy}
          label={STRATEGIES[strategy].label}
          title={`${STRATEGIES[strategy].label} node ${n.nodeId}`}
          danger={STRATEGIES[strategy].danger}
          description={
            <p>
              {STRATEGIES[strategy].does(n)} Audited with your reason. Class now: {n.class}.
            </p>
          }
          run={async (reason) => {
            const res = await api.operations.reconcileNodes({ nodeId: n.nodeId, strategy, reason });
            await queryClient.invalidateQueries({ queryKey: ["diverged"] });
            return res.outcomes.map((o) => `${o.nodeId}: ${o.message}`).join("; ");
          }}
        />
      ))}
    </div>
  );
}

/** The same strategies for every node the report lists with the applied filters (all pages), each node's outcome audited. */
function BulkActions({ filters, shown, more }: { filters: Filters; shown: number; more: boolean }) {
  const queryClient = useQueryClient();
  const scope = `every node diverged${filters.olderThan > 0 ? ` for longer than ${duration(filters.olderThan * 1000)}` : ""}${filters.channel ? ` in channel ${filters.channel}` : " in every channel"}`;
  return (
    <section className="actions" aria-label="reconcile every node listed">
      {(Object.keys(STRATEGIES) as Strategy[]).map((strategy) => (
        <ActionButton
          key={strategy}
          label={`${STRATEGIES[strategy].label} all`}
          title={`${STRATEGIES[strategy].label} ${scope}`}
          danger={STRATEGIES[strategy].danger}
          description={
            <p>
              For {scope} as the server lists it now ({shown} shown{more ? " on this page, more on later pages" : ""}): {STRATEGIES[strategy].doesAll} A node the strategy cannot apply to is skipped with why. Each node's outcome is audited with your reason.
            </p>
          }
          run={async (reason) => {
            const res = await api.operations.reconcileNodes({
              allDiverged: true,
              channel: filters.channel,
              olderThanSeconds: BigInt(filters.olderThan),
              strategy,
              reason,
            });
            await queryClient.invalidateQueries({ queryKey: ["diverged"] });
            const skipped = res.outcomes.filter((o) => o.outcome === "skipped").map((o) => `${o.nodeId} (${o.message})`);
            return `${STRATEGIES[strategy].label}: ${res.done} done, ${res.skipped} skipped${skipped.length > 0 ? `: ${skipped.join("; ")}` : ""}`;
          }}
        />
      ))}
    </section>
  );
}

/** The nodes whose reported release has differed from their desired one for longer than the threshold, longest first. */
export function DivergedPage() {
  const { can } = useSession();
  const now = useNow(5000);
  const overview = useQuery({ queryKey: ["fleet-overview"], queryFn: () => api.nodes.getFleetOverview({}), refetchInterval: POLL_MS });
  const [filters, setFilters] = useState<Filters>({ channel: "", olderThan: 600 });
  const [draft, setDraft] = useState<Filters>(filters);
  const [pages, setPages] = useState<string[]>([""]);
  const token = pages[pages.length - 1];
  const report = useQuery({
    queryKey: ["diverged", filters, token],
    queryFn: () =>
      api.operations.listDivergedNodes({ channel: filters.channel, olderThanSeconds: BigInt(filters.olderThan), pageSize: PAGE_SIZE, pageToken: token }),
    refetchInterval: POLL_MS,
    placeholderData: keepPreviousData,
  });
  const reconcile = can("fleet:reconcile");
  const nodes = report.data?.nodes ?? [];
  const apply = (e: FormEvent) => {
    e.preventDefault();
    setFilters(draft);
    setPages([""]);
  };

  return (
    <section aria-labelledby="diverged-h">
      <h1 id="diverged-h">Diverged nodes</h1>
      <p className="muted">
        Nodes whose reported release has differed from their desired release for longer than the threshold, longest diverged first. Classes:
        installing (its ack of the desired release is moving), failed (that ack failed), stuck (no ack or heartbeat progress), unexpected (it reports a
        release nobody desired for it).
      </p>
      <form className="filters" onSubmit={apply} aria-label="Filter diverged nodes">
        <label>
          Channel
          <select value={draft.channel} onChange={(e) => setDraft({ ...draft, channel: e.target.value })}>
            <option value="">every channel</option>
            {overview.data?.channels.map((c) => (
              <option key={c.channel} value={c.channel}>
                {c.channel}
              </option>
            ))}
          </select>
        </label>
        <label>
          Diverged for longer than
          <select value={draft.olderThan} onChange={(e) => setDraft({ ...draft, olderThan: Number(e.target.value) })}>
            {THRESHOLDS.map(([s, label]) => (
              <option key={s} value={s}>
                {label}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Apply</button>
      </form>
      <ErrorNote error={report.error ?? overview.error} />
      <p className="muted" aria-live="polite">
        {report.data
          ? `${nodes.length}${report.data.nextPageToken ? "+" : ""} node(s) diverged${report.data.olderThanSeconds > 0n ? ` for longer than ${duration(Number(report.data.olderThanSeconds) * 1000)}` : ""}${pages.length > 1 ? ` (page ${pages.length})` : ""}`
          : "Loading…"}
      </p>
      {reconcile && nodes.length > 0 && <BulkActions filters={filters} shown={nodes.length} more={report.data?.nextPageToken !== ""} />}
      {nodes.length > 0 && (
        <div className="table-wrap">
          <table aria-label="diverged nodes">
            <thead>
              <tr>
                <th scope="col">Node</th>
                <th scope="col">Class</th>
                <th scope="col">Should run</th>
                <th scope="col">Reports</th>
                <th scope="col">Diverged since</th>
                <th scope="col">Evidence</th>
                <th scope="col">Plan</th>
                {reconcile && <th scope="col">Reconcile</th>}
              </tr>
            </thead>
            <tbody>
              {nodes.map((n) => (
                <tr key={n.nodeId} data-node={n.nodeId}>
                  <td>
                    <a href={`#/nodes/${encodeURIComponent(n.nodeId)}`}>{n.nodeId}</a>
                    <div className="muted">{n.channel}</div>
                    <div className="muted">seen {ago(n.lastSeen, now)}</div>
                  </td>
                  <td>
                    <span className={`badge c-${n.class}`}>{n.class}</span>
                    {n.drained && (
                      <div>
                        <span className="badge wait">drained</span>
                      </div>
                    )}
                  </td>
                  <td>{n.desiredReleaseId || "—"}</td>
                  <td>{n.reportedReleaseId || "—"}</td>
                  <td>
                    {when(n.divergedSince)}
                    <div className="muted">{ago(n.divergedSince, now)}</div>
                  </td>
                  <td>
                    {n.evidence}
                    {n.reapplyRequestedAt && <div className="muted">reapply asked {ago(n.reapplyRequestedAt, now)}</div>}
                  </td>
                  <td>
                    {n.planId ? (
                      <>
                        {n.planId}
                        {n.stageId && ` / ${n.stageId}`}
                        {n.movedAt && <div className="muted">moved {ago(n.movedAt, now)}</div>}
                      </>
                    ) : (
                      <span className="muted">channel or pin</span>
                    )}
                  </td>
                  {reconcile && (
                    <td>
                      <NodeActions n={n} />
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {report.data && nodes.length === 0 && pages.length === 1 && <p>{filters.olderThan > 0 ? "No node has diverged for longer than that." : "No node has diverged."}</p>}
      {(pages.length > 1 || report.data?.nextPageToken) && <Pager pages={pages} setPages={setPages} nextPageToken={report.data?.nextPageToken} />}
    </section>
  );
}

import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { api } from "../api.js";
import { useSession } from "../auth.js";
import { ActionButton, ErrorNote, useNow } from "../components.js";
import { ago, when } from "../format.js";

const POLL_MS = 3000;
const TIMELINE_LIMIT = 100;

interface Entry {
  key: string;
  at: Timestamp | undefined;
  kind: "ack" | "event" | "audit";
  title: string;
  detail: string;
}

export function NodePage({ nodeId }: { nodeId: string }) {
  const { can } = useSession();
  const now = useNow(5000);
  const queryClient = useQueryClient();
  const summary = useQuery({ queryKey: ["node", nodeId, "summary"], queryFn: () => api.nodes.getNodeSummary({ nodeId }), refetchInterval: POLL_MS });
  const acks = useQuery({ queryKey: ["node", nodeId, "acks"], queryFn: () => api.releases.listNodeAcks({ nodeId }), refetchInterval: POLL_MS });
  const events = useQuery({
    queryKey: ["node", nodeId, "events"],
    queryFn: () => api.events.queryEvents({ nodeId, limit: TIMELINE_LIMIT }),
    refetchInterval: POLL_MS,
    enabled: can("telemetry:read"),
  });
  const audit = useQuery({
    queryKey: ["node", nodeId, "audit"],
    queryFn: () => api.audit.queryAuditRecords({ resource: nodeId, limit: TIMELINE_LIMIT }),
    refetchInterval: POLL_MS,
    enabled: can("audit:read"),
  });

  const entries: Entry[] = [
    ...(acks.data?.acks ?? []).map((a) => ({
      key: `ack-${a.releaseId}`,
      at: a.updatedAt,
      kind: "ack" as const,
      title: `ack ${a.state} for ${a.releaseId}`,
      detail: [a.reportedReleaseId && `runs ${a.reportedReleaseId}`, a.message].filter(Boolean).join("; "),
    })),
    ...(events.data?.events ?? []).map((e) => ({
      key: `event-${e.seq}`,
      at: e.timestamp,
      kind: "event" as const,
      title: e.eventType,
      detail: [e.releaseId && `release ${e.releaseId}`, e.payload && JSON.stringify(e.payload)].filter(Boolean).join("; "),
    })),
    ...(audit.data?.records ?? []).map((r) => ({
      key: `audit-${r.seq}`,
      at: r.timestamp,
      kind: "audit" as const,
      title: `${r.eventName} (${r.outcome}) by ${r.actor}`,
      detail: r.reason,
    })),
  ].sort((a, b) => (b.at ? timestampMs(b.at) : 0) - (a.at ? timestampMs(a.at) : 0));

  const s = summary.data;
  const node = s?.node;
  // Every view of the node: summary, acks, events and audit records.
  const refresh = () => queryClient.invalidateQueries({ queryKey: ["node", nodeId] });
  return (
    <section aria-labelledby="node-h">
      <p>
        <a href="#/fleet">← Fleet</a>
      </p>
      <h1 id="node-h">Node {nodeId}</h1>
      <ErrorNote error={summary.error} />
      {node && s && (
        <>
          <dl className="facts">
            <dt>Lifecycle</dt>
            <dd>
              <span className={`badge l-${node.lifecycle.toLowerCase()}`}>{node.lifecycle}</span>
              {node.drained && node.drainReason && ` (${node.drainReason})`}
            </dd>
            <dt>Channel</dt>
            <dd>{node.channel}</dd>
            <dt>Labels</dt>
            <dd>
              {Object.entries(node.labels)
                .map(([k, v]) => `${k}=${v}`)
                .join(", ") || "none"}
            </dd>
            <dt>Last seen</dt>
            <dd>
              {ago(node.lastSeen, now)} ({when(node.lastSeen)})
            </dd>
            <dt>Agent</dt>
            <dd>{node.agentVersion || "unknown"}</dd>
            <dt>Reports running</dt>
            <dd>{s.reportedReleaseId || "nothing reported"}</dd>
            <dt>Should run</dt>
            <dd>{s.desiredRelease ? `${s.desiredRelease.releaseId} (${s.desiredRelease.version})` : "no release"}</dd>
            <dt>Drift</dt>
            <dd>{s.drift ? <span className="badge drift">drifted</span> : "in sync"}</dd>
            <dt>Last ack</dt>
            <dd>{s.lastAck ? `${s.lastAck.state} for ${s.lastAck.releaseId}, ${ago(s.lastAck.updatedAt, now)}` : "none"}</dd>
            <dt>Lock fingerprint</dt>
            <dd>{s.lockFingerprint || "none"}</dd>
          </dl>
          {can("node:drain") && (
            <div className="actions">
              {node.drained ? (
                <ActionButton
                  label="Undrain"
                  title={`Undrain ${nodeId}`}
                  description="The node takes part in new rollout stages again."
                  reasonRequired={false}
                  run={async (reason) => {
                    await api.nodes.drainNode({ nodeId, undrain: true, reason });
                    await refresh();
                    return "undrained";
                  }}
                />
              ) : (
                <ActionButton
                  label="Drain"
                  title={`Drain ${nodeId}`}
                  description="The node is left out of new rollout stages; it keeps what it runs."
                  danger
                  run={async (reason) => {
                    await api.nodes.drainNode({ nodeId, reason });
                    await refresh();
                    return "drained";
                  }}
                />
              )}
            </div>
          )}
        </>
      )}
      <h2>Timeline</h2>
      <p className="muted">
        Newest first: its acks, its last {TIMELINE_LIMIT} events
        {can("audit:read") ? ` and the audit records about it` : " (audit records need audit:read)"}.
      </p>
      <ErrorNote error={acks.error ?? events.error ?? audit.error} />
      <ol className="timeline">
        {entries.map((e) => (
          <li key={e.key} className={`tl-${e.kind}`}>
            <time>{when(e.at)}</time> <span className={`badge k-${e.kind}`}>{e.kind}</span> <strong>{e.title}</strong>
            {e.detail && <span className="muted"> {e.detail}</span>}
          </li>
        ))}
        {entries.length === 0 && <li>Nothing recorded yet.</li>}
      </ol>
    </section>
  );
}

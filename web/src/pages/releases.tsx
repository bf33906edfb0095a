import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { api } from "../api.js";
import { ErrorNote, StackedBar, useNow, type Segment } from "../components.js";
import { AckChart } from "./ack-chart.js";
import { when } from "../format.js";

const POLL_MS = 5000;
const STATES: [string, string][] = [
  ["healthy", "ok"],
  ["applied", "info"],
  ["downloading", "info2"],
  ["pending", "wait"],
  ["failed", "bad"],
  ["rolled_back", "warn"],
];

/** The chart is read only once someone opens it. */
function AcksOverTime({ releaseId, nowMs }: { releaseId: string; nowMs: number }) {
  const [open, setOpen] = useState(false);
  return (
    <details onToggle={(e) => setOpen(e.currentTarget.open)}>
      <summary>Acks over time</summary>
      {open && <AckChart releaseId={releaseId} nowMs={nowMs} />}
    </details>
  );
}

export function ReleasesPage({ channel }: { channel?: string }) {
  const now = useNow(5000);
  const overview = useQuery({ queryKey: ["fleet-overview"], queryFn: () => api.nodes.getFleetOverview({}), refetchInterval: POLL_MS });
  const channels = overview.data?.channels.map((c) => c.channel) ?? [];
  const chosen = channel ?? channels[0];
  const releases = useQuery({
    queryKey: ["channel-releases", chosen],
    queryFn: () => api.releases.listChannelReleases({ channel: chosen! }),
    enabled: chosen !== undefined,
    refetchInterval: POLL_MS,
    placeholderData: keepPreviousData,
  });
  return (
    <section aria-labelledby="releases-h">
      <h1 id="releases-h">Releases</h1>
      <ErrorNote error={overview.error ?? releases.error} />
      <nav aria-label="Channels" className="tabs">
        {channels.map((c) => (
          <a key={c} href={`#/releases/${encodeURIComponent(c)}`} aria-current={c === chosen ? "page" : undefined}>
            {c}
          </a>
        ))}
      </nav>
      {overview.data && channels.length === 0 && <p>No node is enrolled yet.</p>}
      {releases.data && (
        <>
          <p className="muted">
            {releases.data.channelNodes} node(s) on {chosen}. Shown: the channel's latest release, the releases its plans target and those its nodes
            should run or report running; each bar is the share of the channel's nodes per ack state.
          </p>
          {releases.data.releases.map((cr) => {
            const r = cr.release!;
            const segments: Segment[] = [
              ...STATES.map(([state, tone]) => ({ label: state.replace("_", " "), value: cr.acks.find((a) => a.state === state)?.nodes ?? 0, tone })),
              { label: "no ack", value: cr.notAcked, tone: "none" },
            ];
            return (
              <article key={r.releaseId} className="card" aria-label={`release ${r.releaseId}`}>
                <h2>
                  {r.releaseId} <span className="muted">{r.version}</span> {cr.latest && <span className="badge ok">latest</span>}{" "}
                  {r.staged && <span className="badge info">staged</span>}
                </h2>
                <p className="muted">
                  published {when(r.publishedAt)} · desired by {cr.desiredBy} · reported by {cr.reportedBy}
                  {cr.planIds.length > 0 && ` · plans: ${cr.planIds.join(", ")}`}
                </p>
                <StackedBar label={`acks of ${r.releaseId}`} segments={segments} />
                {cr.acks.length > 0 && <AcksOverTime releaseId={r.releaseId} nowMs={now} />}
              </article>
            );
          })}
        </>
      )}
    </section>
  );
}

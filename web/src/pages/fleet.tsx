import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import type { FleetTotals } from "../../../gen/autonomy/v1/nodes_pb.js";
import { api } from "../api.js";
import { ErrorNote, Pager, useNow } from "../components.js";
import { useSession } from "../auth.js";
import { ago } from "../format.js";
import { IngestChart } from "./ingest-chart.js";

const POLL_MS = 3000;
const PAGE_SIZE = 25;
const COLUMNS: [string, string][] = [
  ["node_id", "Node"],
  ["channel", "Channel"],
  ["lifecycle", "Lifecycle"],
  ["last_seen", "Last seen"],
  ["reported_release_id", "Reports"],
  ["desired_release_id", "Should run"],
];

function Totals({ t }: { t: FleetTotals | undefined }) {
  if (!t) return null;
  const cells: [string, number][] = [
    ["total", t.total],
    ["up", t.up],
    ["stale", t.stale],
    ["unknown", t.unknown],
    ["draining", t.draining],
    ["drifted", t.drifted],
  ];
  return (
    <dl className="totals">
      {cells.map(([k, v]) => (
        <div key={k} className={`t-${k}`}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

interface Filters {
  channel: string;
  lifecycle: string;
  labelSelector: string;
  drift: string;
}

export function FleetPage() {
  const session = useSession();
  const now = useNow(5000);
  const overview = useQuery({ queryKey: ["fleet-overview"], queryFn: () => api.nodes.getFleetOverview({}), refetchInterval: POLL_MS });
  const [filters, setFilters] = useState<Filters>({ channel: "", lifecycle: "", labelSelector: "", drift: "" });
  const [draft, setDraft] = useState<Filters>(filters);
  const [order, setOrder] = useState<{ by: string; desc: boolean }>({ by: "node_id", desc: false });
  // Tokens of the pages before the one shown, so "previous" goes back exactly.
  const [pages, setPages] = useState<string[]>([""]);
  const token = pages[pages.length - 1];
  const search = useQuery({
    queryKey: ["fleet-search", filters, order, token],
    queryFn: () =>
      api.nodes.searchFleetNodes({ ...filters, orderBy: order.by, descending: order.desc, pageSize: PAGE_SIZE, pageToken: token }),
    refetchInterval: POLL_MS,
    placeholderData: keepPreviousData,
  });

  const apply = (e: FormEvent) => {
    e.preventDefault();
    setFilters(draft);
    setPages([""]);
  };
  const sortBy = (by: string) => {
    setOrder((o) => ({ by, desc: o.by === by ? !o.desc : false }));
    setPages([""]);
  };
  const rows = search.data?.rows ?? [];
  const offset = search.data?.offset ?? 0;

  return (
    <section aria-labelledby="fleet-h">
      <h1 id="fleet-h">Fleet</h1>
      <ErrorNote error={overview.error} />
      <h2>All nodes</h2>
      <Totals t={overview.data?.totals} />
      <div className="channels">
        {overview.data?.channels.map((c) => (
          <article key={c.channel} className="card" aria-label={`channel ${c.channel}`}>
            <h3>
              <a href={`#/releases/${encodeURIComponent(c.channel)}`}>{c.channel}</a>
            </h3>
            <p className="muted">latest release: {c.latestRelease ? `${c.latestRelease.releaseId} (${c.latestRelease.version})` : "none"}</p>
            <Totals t={c.totals} />
          </article>
        ))}
      </div>

      {session.can("telemetry:read") && (
        <>
          <h2>Ingest rate</h2>
          <IngestChart />
        </>
      )}

      <h2>Nodes</h2>
      <form className="filters" onSubmit={apply} aria-label="Filter nodes">
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
          Lifecycle
          <select value={draft.lifecycle} onChange={(e) => setDraft({ ...draft, lifecycle: e.target.value })}>
            <option value="">any</option>
            {["HEALTHY", "STALE", "DRAINING", "UNAVAILABLE"].map((l) => (
              <option key={l}>{l}</option>
            ))}
          </select>
        </label>
        <label>
          Labels
          <input placeholder="site=berlin,tier=edge" value={draft.labelSelector} onChange={(e) => setDraft({ ...draft, labelSelector: e.target.value })} />
        </label>
        <label>
          Drift
          <select value={draft.drift} onChange={(e) => setDraft({ ...draft, drift: e.target.value })}>
            <option value="">any</option>
            <option value="drifted">drifted</option>
            <option value="in_sync">in sync</option>
          </select>
        </label>
        <button type="submit">Apply</button>
      </form>
      <ErrorNote error={search.error} />
      <p className="muted" aria-live="polite">
        {search.data ? `${search.data.totalSize} matching node(s); showing ${rows.length === 0 ? 0 : offset + 1}–${offset + rows.length}` : "Loading…"}
      </p>
      <div className="table-wrap">
        <table>
          <thead>
            <tr>
              {COLUMNS.map(([key, label]) => (
                <th key={key} scope="col" aria-sort={order.by === key ? (order.desc ? "descending" : "ascending") : undefined}>
                  <button type="button" className="sort" onClick={() => sortBy(key)}>
                    {label}
                    {order.by === key ? (order.desc ? " ▼" : " ▲") : ""}
                  </button>
                </th>
              ))}
              <th scope="col">Drift</th>
              <th scope="col">Labels</th>
            </tr>
          </thead>
          <tbody>
            {rows.map(({ node, labels }) => (
              <tr key={node!.nodeId}>
                <td>
                  <a href={`#/nodes/${encodeURIComponent(node!.nodeId)}`}>{node!.nodeId}</a>
                </td>
                <td>{node!.channel}</td>
                <td>
                  <span className={`badge l-${node!.lifecycle.toLowerCase()}`}>{node!.lifecycle}</span>
                </td>
                <td>{ago(node!.lastSeen, now)}</td>
                <td>{node!.reportedReleaseId || "—"}</td>
                <td>{node!.desiredReleaseId || "—"}</td>
                <td>{node!.drift ? <span className="badge drift">drifted</span> : "in sync"}</td>
                <td className="labels">
                  {Object.entries(labels)
                    .map(([k, v]) => `${k}=${v}`)
                    .join(", ")}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <Pager pages={pages} setPages={setPages} nextPageToken={search.data?.nextPageToken} />
    </section>
  );
}

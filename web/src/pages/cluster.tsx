import { keepPreviousData, useQuery, useQueryClient } from "@tanstack/react-query";
import type { ReactNode } from "react";
import { api, Code, ConnectError, describeError } from "../api.js";
import { useSession } from "../auth.js";
import { ActionButton, ErrorNote } from "../components.js";
import { seconds, whenRfc3339 } from "../format.js";

const POLL_MS = 3000;

function Ready({ ok }: { ok: boolean }) {
  return <span className={`badge ${ok ? "ok" : "bad"}`}>{ok ? "ready" : "not ready"}</span>;
}

function Fact({ term, children }: { term: string; children: ReactNode }) {
  return (
    <>
      <dt>{term}</dt>
      <dd>{children}</dd>
    </>
  );
}

/** A refused resign in words, with the replication lag read again when it was the lag. */
async function explainResign(err: unknown): Promise<ReactNode> {
  const e = ConnectError.from(err);
  if (e.code !== Code.FailedPrecondition) return describeError(err);
  let lag: ReactNode = null;
  try {
    const q = await api.ha.haQuorum({});
    if (q.mode === "postgres") {
      lag = (
        <>
          {" "}
          Replication lag now: {seconds(q.replayLagSeconds)}, {q.lagStatus} (critical above {seconds(q.lagCriticalSeconds)}).
        </>
      );
    }
  } catch {
    // the refusal itself is what matters
  }
  return (
    <>
      <strong>The leader was not asked to resign; nothing changed.</strong> {e.rawMessage}.{lag}
    </>
  );
}

/** This replica's view of the deployment: its role, the leader, readiness, quorum and the audit chain. */
export function ClusterPage() {
  const { can } = useSession();
  const queryClient = useQueryClient();
  const poll = { refetchInterval: POLL_MS, placeholderData: keepPreviousData } as const;
  const status = useQuery({ queryKey: ["ha", "status"], queryFn: () => api.ha.haStatus({}), ...poll });
  const leader = useQuery({ queryKey: ["ha", "leader"], queryFn: () => api.ha.haLeader({}), ...poll });
  const quorum = useQuery({ queryKey: ["ha", "quorum"], queryFn: () => api.ha.haQuorum({}), ...poll });
  const audit = useQuery({ queryKey: ["ha", "audit"], queryFn: () => api.ha.haAudit({}), ...poll });
  const s = status.data;
  const l = leader.data;
  const q = quorum.data;
  const a = audit.data;
  const standalone = s?.mode === "standalone";
  const asOf = Math.max(status.dataUpdatedAt, leader.dataUpdatedAt, quorum.dataUpdatedAt, audit.dataUpdatedAt);

  return (
    <section aria-labelledby="cluster-h">
      <h1 id="cluster-h">Cluster</h1>
      <ErrorNote error={status.error ?? leader.error ?? quorum.error ?? audit.error} />
      {asOf > 0 && (
        <p className="muted">
          As this replica sees it, read {new Date(asOf).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z")}; refreshed every {POLL_MS / 1000} s.
        </p>
      )}
      {standalone && (
        <p className="card standalone" data-testid="standalone">
          <strong>Standalone deployment</strong> (embedded SQLite): this replica is the only one and always leads. There is no election, no
          replication and no leadership to hand over; running several replicas needs PostgreSQL (<code>--postgres-url</code>).
        </p>
      )}

      {s && (
        <section aria-label="this replica">
          <h2>This replica</h2>
          <dl className="facts">
            <Fact term="Replica">{s.replicaId}</Fact>
            <Fact term="Role">
              {standalone ? (
                <span className="badge ok">standalone (always leads)</span>
              ) : s.thisReplicaIsLeader ? (
                <span className="badge ok">leader</span>
              ) : (
                <span className="badge info">follower</span>
              )}
            </Fact>
            <Fact term="Read">
              <Ready ok={s.readReady} />
            </Fact>
            <Fact term="Write">
              <Ready ok={s.writeReady} />
            </Fact>
            {s.reason && <Fact term="Why not ready">{s.reason}</Fact>}
          </dl>
        </section>
      )}

      {l && !standalone && (
        <section aria-label="leader">
          <h2>Leader</h2>
          <dl className="facts">
            <Fact term="Holder">
              {l.holderId || "nobody leads now"}
              {l.holderId !== "" && l.holderId === s?.replicaId && " (this replica)"}
            </Fact>
            <Fact term="Epoch">{l.currentEpoch}</Fact>
            <Fact term="Acquired">{whenRfc3339(l.acquiredAt)}</Fact>
            <Fact term="Renewed">{whenRfc3339(l.renewedAt)}</Fact>
            {l.resignedAt && <Fact term="Resigned">{whenRfc3339(l.resignedAt)} (no new epoch began yet)</Fact>}
            <Fact term="Lease">{seconds(l.leaseMs / 1000)}</Fact>
            <Fact term="Session lock">{l.sessionLockHeld ? "held" : "not held"}</Fact>
          </dl>
        </section>
      )}

      {q && (
        <section aria-label="quorum">
          <h2>Quorum</h2>
          {q.mode === "standalone" ? (
            <p>{q.message}.</p>
          ) : (
            <>
              <dl className="facts">
                <Fact term="Synchronous standbys">
                  {q.syncStandbyCount} of {q.standbyCount} connected
                </Fact>
                <Fact term="Replay lag">{seconds(q.replayLagSeconds)}</Fact>
                <Fact term="Lag status">
                  <span className={`badge ${q.lagStatus === "ok" ? "ok" : "bad"}`}>{q.lagStatus}</span> (critical above {seconds(q.lagCriticalSeconds)})
                </Fact>
                <Fact term="Writes">
                  <Ready ok={q.writeReady} />
                </Fact>
                {q.message && <Fact term="Note">{q.message}</Fact>}
              </dl>
              {q.standbys.length > 0 && (
                <div className="table-wrap">
                  <table aria-label="standbys">
                    <thead>
                      <tr>
                        <th scope="col">Standby</th>
                        <th scope="col">State</th>
                        <th scope="col">Sync state</th>
                        <th scope="col">Replay lag</th>
                        <th scope="col">WAL not replayed</th>
                      </tr>
                    </thead>
                    <tbody>
                      {q.standbys.map((b) => (
                        <tr key={b.applicationName}>
                          <td>{b.applicationName}</td>
                          <td>{b.state}</td>
                          <td>{b.syncState}</td>
                          <td>{seconds(b.replayLagSeconds)}</td>
                          <td>{Math.round(b.replayLagBytes)} bytes</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              )}
            </>
          )}
        </section>
      )}

      {a && (
        <section aria-label="audit chain">
          <h2>Audit chain</h2>
          <dl className="facts">
            <Fact term="Chain">
              <span className={`badge ${a.ok ? "ok" : "bad"}`}>{a.ok ? "intact" : "broken"}</span>
              {a.problem && ` ${a.problem}`}
            </Fact>
            <Fact term="Verified through">
              record {a.verifiedThroughSeq} of {a.headSeq}
            </Fact>
            <Fact term="Last write">{whenRfc3339(a.lastWriteAt)}</Fact>
          </dl>
        </section>
      )}

      {s && !standalone && can("ha:manage") && (
        <div className="actions">
          <ActionButton
            label="Resign leadership"
            title="Resign the current leader's epoch"
            danger
            description={
              <p>
                Ends epoch {l?.currentEpoch ?? s.currentEpoch} of {l?.holderId || s.holderId || "the leader"}; a follower leads within about a second (or
                this replica again after its hold-off, when it is alone). The server refuses while replication lag is critical or when nobody leads. The
                resign is audited (category ha).
              </p>
            }
            run={async (reason) => {
              const r = await api.ha.haResign({ reason });
              await queryClient.invalidateQueries({ queryKey: ["ha"] });
              return `Epoch ${r.previousEpoch} of ${r.previousHolder} resigned at ${whenRfc3339(r.resignedAt)}`;
            }}
            explain={explainResign}
          />
        </div>
      )}
    </section>
  );
}

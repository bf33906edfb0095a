import { useQuery } from "@tanstack/react-query";
import { api } from "../api.js";
import { ackCurves } from "../format.js";

const W = 640;
const H = 160;
const PAD = { left: 36, right: 12, top: 10, bottom: 22 };
const TONES: Record<string, string> = { healthy: "ok", applied: "info", downloading: "info2", pending: "wait", failed: "bad", rolled_back: "warn" };

/**
 * A release's acks over time: for each state, how many nodes had reached the state they are in
 * now, by the time the server stored that ack. Opened on demand (one more read per release).
 */
export function AckChart({ releaseId, nowMs }: { releaseId: string; nowMs: number }) {
  const acks = useQuery({ queryKey: ["release-acks", releaseId], queryFn: () => api.releases.listReleaseAcks({ releaseId }), refetchInterval: 5000 });
  if (!acks.data) return <p className="muted">Reading the acks…</p>;
  const curves = ackCurves(acks.data.acks);
  if (curves.size === 0) return <p className="muted">No ack yet.</p>;
  const all = [...curves.values()].flat();
  const t0 = Math.min(...all.map((s) => s.atMs));
  const t1 = Math.max(nowMs, t0 + 1000);
  const top = Math.max(...all.map((s) => s.count));
  const x = (t: number) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (n: number) => H - PAD.bottom - (n / top) * (H - PAD.top - PAD.bottom);
  const summary = [...curves].map(([state, steps]) => `${state} ${steps.length}`).join(", ");
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`acks of ${releaseId} over time since ${new Date(t0).toISOString()}: ${summary}`}>
        <line className="axis" x1={PAD.left} y1={y(0)} x2={W - PAD.right} y2={y(0)} />
        <line className="axis" x1={PAD.left} y1={y(0)} x2={PAD.left} y2={PAD.top} />
        <text className="tick" x={PAD.left - 6} y={y(top) + 4} textAnchor="end">
          {top}
        </text>
        <text className="tick" x={PAD.left - 6} y={y(0) + 4} textAnchor="end">
          0
        </text>
        <text className="tick" x={PAD.left} y={H - 6}>
          {new Date(t0).toISOString().slice(11, 19)}Z
        </text>
        <text className="tick" x={W - PAD.right} y={H - 6} textAnchor="end">
          now
        </text>
        {[...curves].map(([state, steps]) => {
          let d = `M ${x(steps[0].atMs)} ${y(0)}`;
          let last = 0;
          for (const s of steps) {
            d += ` L ${x(s.atMs)} ${y(last)} L ${x(s.atMs)} ${y(s.count)}`;
            last = s.count;
          }
          d += ` L ${x(t1)} ${y(last)}`;
          return <path key={state} className={`curve ${TONES[state] ?? "wait"}`} d={d} />;
        })}
      </svg>
      <figcaption className="muted">
        Nodes per ack state over time, by when each node's current ack was stored ({summary}).
      </figcaption>
    </figure>
  );
}

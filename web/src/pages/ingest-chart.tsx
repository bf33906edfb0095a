import { timestampMs } from "@bufbuild/protobuf/wkt";
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { api } from "../api.js";
import { ErrorNote } from "../components.js";

const W = 640;
const H = 140;
const PAD = { left: 44, right: 12, top: 10, bottom: 22 };
const WINDOW_SECONDS = 600;
const BUCKET_SECONDS = 10;

/** "1.5k" for 1500: the axis labels of the plot. */
function compact(n: number): string {
  if (n >= 10_000) return `${Math.round(n / 1000)}k`;
  if (n >= 1000) return `${(n / 1000).toFixed(1)}k`;
  return n >= 10 ? String(Math.round(n)) : String(Number(n.toFixed(1)));
}

/**
 * Events stored per second over the last ten minutes, in 10 s buckets, from the stored events
 * (GetIngestRate): what a reload or another browser shows too. The last bucket is still filling
 * and is drawn dashed.
 */
export function IngestChart() {
  const rate = useQuery({
    queryKey: ["ingest-rate"],
    queryFn: () => api.events.getIngestRate({ windowSeconds: WINDOW_SECONDS, bucketSeconds: BUCKET_SECONDS }),
    refetchInterval: BUCKET_SECONDS * 1000,
    placeholderData: keepPreviousData,
  });
  if (rate.error) return <ErrorNote error={rate.error} />;
  if (!rate.data) return <p className="muted">Reading the ingest rate…</p>;
  const seconds = rate.data.bucketSeconds;
  const points = rate.data.buckets.map((b) => ({ atMs: b.start ? timestampMs(b.start) : 0, perSecond: Number(b.events) / seconds }));
  if (points.length < 2) return <p className="muted">No ingest data.</p>;
  const done = points.slice(0, -1);
  const top = Math.max(1, ...done.map((p) => p.perSecond), points[points.length - 1].perSecond);
  const t0 = points[0].atMs;
  const t1 = points[points.length - 1].atMs;
  const x = (t: number) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v: number) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const path = done.map((p, i) => `${i === 0 ? "M" : "L"} ${x(p.atMs).toFixed(1)} ${y(p.perSecond).toFixed(1)}`).join(" ");
  const last = done[done.length - 1];
  const filling = points[points.length - 1];
  const mean = Number(rate.data.total) / (seconds * points.length);
  const label = `events stored per second over the last ${WINDOW_SECONDS / 60} minutes: now ${compact(last.perSecond)}/s, peak ${compact(top)}/s, mean ${compact(mean)}/s`;
  return (
    <figure className="chart" aria-label="Ingest rate">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={label}>
        <line className="axis" x1={PAD.left} y1={y(0)} x2={W - PAD.right} y2={y(0)} />
        <line className="axis" x1={PAD.left} y1={y(0)} x2={PAD.left} y2={PAD.top} />
        <text className="tick" x={PAD.left - 6} y={y(top) + 4} textAnchor="end">
          {compact(top)}/s
        </text>
        <text className="tick" x={PAD.left - 6} y={y(0) + 4} textAnchor="end">
          0
        </text>
        <text className="tick" x={PAD.left} y={H - 6}>
          −{WINDOW_SECONDS / 60}m
        </text>
        <text className="tick" x={W - PAD.right} y={H - 6} textAnchor="end">
          now
        </text>
        <path className="curve info" d={path} />
        <path className="curve info filling" d={`M ${x(last.atMs).toFixed(1)} ${y(last.perSecond).toFixed(1)} L ${x(filling.atMs).toFixed(1)} ${y(filling.perSecond).toFixed(1)}`} />
      </svg>
      <figcaption className="muted" data-testid="ingest-summary">
        Ingest rate: {compact(last.perSecond)} events/s in the last full {seconds}s; peak {compact(top)}/s, {Number(rate.data.total).toLocaleString("en")} events in{" "}
        {WINDOW_SECONDS / 60} minutes.
      </figcaption>
    </figure>
  );
}

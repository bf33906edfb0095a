/**
 * Events stored per bucket of time, read through the events' primary key only: sequence
 * numbers grow with the time the server stored the events (received_at_ms), so the first
 * event of the window is found by a binary search over seq (a few dozen key lookups) and the
 * window is then one range scan grouped by bucket. No index on received_at_ms is needed, so
 * ingestion pays nothing for the dashboard's plot.
 */
export interface IngestRateQuery {
  sinceMs: number;
  bucketMs: number;
  buckets: number;
}

/** What a dialect provides: the seq range, the receipt time at a seq, and the bucket counts from a seq on. */
export interface IngestRateReads {
  /** Smallest and largest stored seq, or undefined when there is no event. */
  seqRange(): Promise<{ min: number; max: number } | undefined>;
  /** received_at_ms of the first event at or after seq (undefined: none). */
  receivedAtOrAfter(seq: number): Promise<number | undefined>;
  /** Counts by bucket index (received_at_ms - sinceMs) / bucketMs of the events from seq on. */
  countFrom(seq: number, q: IngestRateQuery): Promise<{ bucket: number; n: number }[]>;
}

/** Counts per bucket, oldest first, `q.buckets` of them. */
export async function ingestCounts(reads: IngestRateReads, q: IngestRateQuery): Promise<number[]> {
  const counts = new Array<number>(q.buckets).fill(0);
  const range = await reads.seqRange();
  if (!range) return counts;
  // The first seq whose event was stored at or after sinceMs.
  let lo = range.min;
  let hi = range.max + 1;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const at = await reads.receivedAtOrAfter(mid);
    if (at === undefined || at >= q.sinceMs) hi = mid;
    else lo = mid + 1;
  }
  if (lo > range.max) return counts;
  for (const { bucket, n } of await reads.countFrom(lo, q)) {
    const i = Math.floor(bucket);
    if (i >= 0 && i < q.buckets) counts[i] += n;
  }
  return counts;
}

/**
 * A token bucket per key (a client address): `burst` tokens, refilled at `perSecond`. Memory
 * stays bounded: at most `maxKeys` buckets are kept, and a full bucket is the same as none.
 */
export interface RateLimitSettings {
  /** Tokens added per second; 0 turns the limit off. */
  perSecond: number;
  /** Bucket size: how many may come at once. */
  burst: number;
  /** Keys tracked at most; beyond, the oldest buckets are forgotten. */
  maxKeys?: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly maxKeys: number;

  constructor(
    private readonly settings: RateLimitSettings,
    private readonly now: () => number = Date.now,
  ) {
    this.maxKeys = settings.maxKeys ?? 100_000;
  }

  get enabled(): boolean {
    return this.settings.perSecond > 0;
  }

  private level(key: string): { tokens: number; at: number } | undefined {
    const bucket = this.buckets.get(key);
    if (!bucket) return undefined;
    const t = this.now();
    bucket.tokens = Math.min(this.settings.burst, bucket.tokens + ((t - bucket.at) / 1000) * this.settings.perSecond);
    bucket.at = t;
    return bucket;
  }

  /** Seconds until `key` may come again: 0 when it may now. Takes nothing. */
  retryAfter(key: string): number {
    if (!this.enabled) return 0;
    const bucket = this.level(key);
    if (!bucket || bucket.tokens >= 1) return 0;
    return Math.max(1, Math.ceil((1 - bucket.tokens) / this.settings.perSecond));
  }

  /** Takes one token from `key`'s bucket (it may go empty; `retryAfter` then says how long). */
  take(key: string): void {
    if (!this.enabled) return;
    let bucket = this.level(key);
    if (!bucket) {
      if (this.buckets.size >= this.maxKeys) this.forgetOldest();
      bucket = { tokens: this.settings.burst, at: this.now() };
      this.buckets.set(key, bucket);
    }
    bucket.tokens = Math.max(0, bucket.tokens - 1);
  }

  /**
   * Seconds until `key` may take `n` tokens: it may once its bucket holds min(n, burst), so a
   * batch larger than the burst passes on a full bucket and leaves it in debt. 0: now. Takes nothing.
   */
  waitFor(key: string, n: number): number {
    if (!this.enabled || n <= 0) return 0;
    const tokens = this.level(key)?.tokens ?? this.settings.burst;
    const needed = Math.min(n, this.settings.burst);
    return tokens >= needed ? 0 : Math.max(1, Math.ceil((needed - tokens) / this.settings.perSecond));
  }

  /** Takes `n` tokens from `key`'s bucket (after `waitFor` said 0); it may go into debt. */
  takeN(key: string, n: number): void {
    if (!this.enabled || n <= 0) return;
    let bucket = this.level(key);
    if (!bucket) {
      if (this.buckets.size >= this.maxKeys) this.forgetOldest();
      bucket = { tokens: this.settings.burst, at: this.now() };
      this.buckets.set(key, bucket);
    }
    bucket.tokens -= n;
  }

  private forgetOldest(): void {
    // Map keeps insertion order: drop the first tenth, which are the longest tracked.
    let n = Math.ceil(this.maxKeys / 10);
    for (const key of this.buckets.keys()) {
      if (n-- <= 0) break;
      this.buckets.delete(key);
    }
  }
}

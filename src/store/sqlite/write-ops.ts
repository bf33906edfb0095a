/**
 * The handlers of a set of writer-thread writes: one per operation, taking that operation's
 * request and returning that operation's result, so each is type-checked on its own.
 */
export type WriteHandlers<W extends { op: string }, R extends { [K in W["op"]]: unknown }> = {
  [K in W["op"]]: (w: Extract<W, { op: K }>) => R[K];
};

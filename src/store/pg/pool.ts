import pg from "pg";

/**
 * The store's pool. A client checked out for a transaction is given back, as broken, when its
 * connection ends while it is out, and giving it back twice does nothing. drizzle-orm 0.45's
 * node-postgres transaction() sends BEGIN before the try/finally that releases its client
 * (drizzle-team/drizzle-orm#6241): a connection that drops right after checkout fails BEGIN and
 * would keep its client checked out for good, until the pool has none left and `end()` waits
 * forever (a stop that never finishes after PostgreSQL was cut off). test/pg-pool.test.ts drives
 * that path through drizzle itself.
 */
export class StorePool extends pg.Pool {
  override connect(): Promise<pg.PoolClient>;
  override connect(callback: (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void): void;
  override connect(callback?: (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void): Promise<pg.PoolClient> | void {
    // The callback form is pg-pool's own (pool.query): it releases the client on every path.
    if (callback) return super.connect(callback);
    return super.connect().then(givenBackWhenItEnds);
  }
}

function givenBackWhenItEnds(client: pg.PoolClient): pg.PoolClient {
  const release = client.release.bind(client);
  let released = false;
  const ended = () => {
    if (released) return;
    released = true;
    release(new Error("the connection ended while the client was checked out"));
  };
  client.once("end", ended);
  client.release = (err?: Error | boolean) => {
    if (released) return;
    released = true;
    client.off("end", ended);
    release(err);
  };
  return client;
}

/**
 * Compile-time proof that the two dialects' schemas mirror each other: the same tables, and
 * each table's rows ($inferSelect) with the same columns of the same types. A column added to
 * one schema only fails `npm run typecheck` here.
 */
import type * as pg from "./pg/schema.js";
import type * as sqlite from "./sqlite/schema.js";

type RowsOf<M> = { [K in keyof M as M[K] extends { $inferSelect: object } ? K : never]: M[K] extends { $inferSelect: infer R } ? R : never };
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Assert<T extends true> = T;

type SqliteRows = RowsOf<typeof sqlite>;
type PgRows = RowsOf<typeof pg>;

export type SameTables = Assert<Equal<keyof SqliteRows, keyof PgRows>>;
export type SameColumns = Assert<{ [K in keyof SqliteRows & keyof PgRows]: Equal<SqliteRows[K], PgRows[K]> }[keyof SqliteRows & keyof PgRows]>;

/** The row of a table, as both dialects return it. */
export type RowOf<K extends keyof SqliteRows & keyof PgRows> = SqliteRows[K];

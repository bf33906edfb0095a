import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SortedList } from "../src/domain/sorted-list.js";

interface Item {
  id: number;
  key: number;
}
const cmp = (a: Item, b: Item) => a.key - b.key || a.id - b.id;

describe("SortedList", () => {
  it("stays sorted through inserts, removals and key changes of up to 600 elements, like a sorted array", () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant("insert" as const), key: fc.integer({ min: 0, max: 50 }) }),
      fc.record({ kind: fc.constant("remove" as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant("rekey" as const), pick: fc.nat(), key: fc.integer({ min: 0, max: 50 }) }),
    );
    fc.assert(
      fc.property(fc.nat({ max: 400 }), fc.array(op, { maxLength: 600 }), (initial, ops) => {
        let next = 0;
        const model = Array.from({ length: initial }, (): Item => ({ id: next++, key: next % 37 })).sort(cmp);
        const list = SortedList.from([...model], cmp);
        for (const o of ops) {
          if (o.kind === "insert") {
            const item = { id: next++, key: o.key };
            list.insert(item);
            model.push(item);
          } else if (model.length > 0) {
            const item = model[o.pick % model.length];
            list.remove(item);
            if (o.kind === "remove") model.splice(model.indexOf(item), 1);
            else {
              item.key = o.key;
              list.insert(item);
            }
          }
          model.sort(cmp);
        }
        expect([...list]).toEqual(model);
        expect(list.size).toBe(model.length);
        const threshold = 25;
        expect(list.first((x) => x.key >= threshold)).toBe(model.find((x) => x.key >= threshold));
      }),
      { seed: 20261203, numRuns: 200 },
    );
  });

  it("refuses to remove an element that is not there under its key", () => {
    const a = { id: 1, key: 1 };
    const list = SortedList.from([a, { id: 2, key: 2 }], cmp);
    expect(() => list.remove({ id: 3, key: 1 })).toThrow(/not found/);
    a.key = 5; // changed without a remove first: no longer found where it is
    expect(() => list.remove(a)).toThrow(/not found/);
    expect(() => new SortedList(cmp).remove(a)).toThrow(/not found/);
  });
});

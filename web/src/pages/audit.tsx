import { toJsonString, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { useMutation, useQuery } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { AuditRecordSchema, type AuditRecord, type QueryAuditRecordsRequest, type QueryAuditRecordsRequestSchema } from "../../../gen/autonomy/v1/audit_pb.js";
import { AUDIT_CSV_COLUMNS, auditCsvRow } from "../../../src/domain/audit-csv.js";
import { api } from "../api.js";
import { ErrorNote } from "../components.js";
import { when } from "../format.js";

const POLL_MS = 5000;
const PAGE = 50;
const EXPORT_MAX = 100_000;
const FIELDS = ["event_name", "category", "action", "outcome", "actor", "resource_type", "resource", "source"] as const;
type Field = (typeof FIELDS)[number];
const camel = (f: Field) => f.replace(/_(.)/g, (_, c: string) => c.toUpperCase()) as keyof QueryAuditRecordsRequest;

interface Form {
  fields: Record<Field, string>;
  since: string;
  until: string;
}

const emptyForm = (): Form => ({ fields: Object.fromEntries(FIELDS.map((f) => [f, ""])) as Record<Field, string>, since: "", until: "" });

function toRequest(f: Form): MessageInitShape<typeof QueryAuditRecordsRequestSchema> {
  const req: Record<string, unknown> = {};
  for (const k of FIELDS) if (f.fields[k].trim()) req[camel(k)] = f.fields[k].trim();
  // datetime-local is the browser's local time; the request carries UTC.
  if (f.since) req.since = timestampFromMs(new Date(f.since).getTime());
  if (f.until) req.until = timestampFromMs(new Date(f.until).getTime());
  return req as MessageInitShape<typeof QueryAuditRecordsRequestSchema>;
}

// The same files as `autonomy audit export`: JSON lines of the records in protobuf JSON with
// proto field names, or CSV (src/domain/audit-csv.ts).

function download(name: string, type: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function AuditPage() {
  const [draft, setDraft] = useState<Form>(emptyForm);
  const [form, setForm] = useState<Form>(emptyForm);
  const [cursors, setCursors] = useState<bigint[]>([0n]);
  const cursor = cursors[cursors.length - 1];
  const records = useQuery({
    queryKey: ["audit", form, cursor.toString()],
    queryFn: () => api.audit.queryAuditRecords({ ...toRequest(form), limit: PAGE, cursor }),
    refetchInterval: cursor === 0n ? POLL_MS : false,
  });
  const verify = useMutation({ mutationFn: () => api.audit.verifyAuditChain({}) });
  const exporter = useMutation({
    mutationFn: async (format: "jsonl" | "csv") => {
      const all: AuditRecord[] = [];
      let next = 0n;
      do {
        const page = await api.audit.queryAuditRecords({ ...toRequest(form), limit: 1000, order: "asc", cursor: next });
        all.push(...page.records);
        next = page.nextCursor;
      } while (next !== 0n && all.length < EXPORT_MAX);
      if (format === "jsonl") {
        download("audit.jsonl", "application/x-ndjson", all.map((r) => toJsonString(AuditRecordSchema, r, { useProtoFieldName: true }) + "\n").join(""));
      } else {
        download("audit.csv", "text/csv", [AUDIT_CSV_COLUMNS.join(","), ...all.map(auditCsvRow)].join("\n") + "\n");
      }
      return all.length;
    },
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setForm(draft);
    setCursors([0n]);
  };
  const v = verify.data;
  return (
    <section aria-labelledby="audit-h">
      <h1 id="audit-h">Audit</h1>
      <form className="filters" onSubmit={submit} aria-label="Query the audit trail">
        {FIELDS.map((f) => (
          <label key={f}>
            {f.replace("_", " ")}
            <input value={draft.fields[f]} onChange={(e) => setDraft({ ...draft, fields: { ...draft.fields, [f]: e.target.value } })} />
          </label>
        ))}
        <label>
          since (your local time)
          <input type="datetime-local" value={draft.since} onChange={(e) => setDraft({ ...draft, since: e.target.value })} />
        </label>
        <label>
          until (your local time)
          <input type="datetime-local" value={draft.until} onChange={(e) => setDraft({ ...draft, until: e.target.value })} />
        </label>
        <button type="submit">Query</button>
      </form>
      <div className="actions">
        <button type="button" onClick={() => verify.mutate()} disabled={verify.isPending}>
          Verify the chain
        </button>
        <button type="button" onClick={() => exporter.mutate("jsonl")} disabled={exporter.isPending}>
          Export JSON lines
        </button>
        <button type="button" onClick={() => exporter.mutate("csv")} disabled={exporter.isPending}>
          Export CSV
        </button>
        {exporter.data !== undefined && <span role="status">exported {exporter.data} record(s)</span>}
      </div>
      <ErrorNote error={verify.error ?? exporter.error ?? records.error} />
      {v && (
        <div role="status" className={v.ok ? "verify ok" : "verify bad"} data-testid="verify">
          {v.ok ? "Chain intact" : "Chain broken"}: {v.recordsChecked} record(s) checked, seq {String(v.firstSeq)} to {String(v.lastSeq)}
          {v.startsAfterPrune && " (starts after a prune)"}
          {v.problems.length > 0 && (
            <ul>
              {v.problems.map((p) => (
                <li key={String(p.seq)}>
                  seq {String(p.seq)}: {p.problem}
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
      <div className="table-wrap">
        <table>
          <thead>
            <tr>
              {["seq", "time", "event", "outcome", "actor", "resource", "reason"].map((h) => (
                <th key={h} scope="col">
                  {h}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {records.data?.records.map((r) => (
              <tr key={String(r.seq)}>
                <td>{String(r.seq)}</td>
                <td>{when(r.timestamp)}</td>
                <td>{r.eventName}</td>
                <td>
                  <span className={`badge o-${r.outcome}`}>{r.outcome}</span>
                </td>
                <td>{r.actor}</td>
                <td>
                  {r.resourceType}/{r.resource}
                </td>
                <td>{r.reason}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="pager">
        <button type="button" disabled={cursors.length === 1} onClick={() => setCursors((c) => c.slice(0, -1))}>
          Newer
        </button>
        <button
          type="button"
          disabled={!records.data || records.data.nextCursor === 0n}
          onClick={() => records.data && setCursors((c) => [...c, records.data!.nextCursor])}
        >
          Older
        </button>
      </div>
    </section>
  );
}

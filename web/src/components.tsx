import { useEffect, useId, useRef, useState, type Dispatch, type FormEvent, type ReactNode, type SetStateAction } from "react";
import { describeError } from "./api.js";

/** One segment of a stacked bar. */
export interface Segment {
  label: string;
  value: number;
  /** A class of styles.css: the segment's colour. */
  tone: string;
}

/** A horizontal bar of segments sized by value, with its figures also in text (for screen readers and for people who read). */
export function StackedBar({ segments, label }: { segments: Segment[]; label: string }) {
  const total = segments.reduce((n, s) => n + s.value, 0);
  const text = segments
    .filter((s) => s.value > 0)
    .map((s) => `${s.label} ${s.value}`)
    .join(", ");
  return (
    <div className="stacked">
      <div className="bar" role="img" aria-label={`${label}: ${text || "none"}`}>
        {total > 0 &&
          segments
            .filter((s) => s.value > 0)
            .map((s) => <span key={s.label} className={`seg ${s.tone}`} style={{ width: `${(100 * s.value) / total}%` }} title={`${s.label}: ${s.value}`} />)}
      </div>
      <div className="legend">
        {segments
          .filter((s) => s.value > 0)
          .map((s) => (
            <span key={s.label}>
              <i className={`dot ${s.tone}`} aria-hidden="true" />
              {s.label} {s.value}
            </span>
          ))}
        {total === 0 && <span>none</span>}
      </div>
    </div>
  );
}

export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <p role="alert" className="error">
      {describeError(error)}
    </p>
  );
}

/** What the confirm step of an action returns: a message to show, or it throws. */
export interface ActionOutcome {
  message: string;
}

/**
 * A button that opens a dialog asking for a reason, then runs the action. A failure is
 * shown in the dialog; `explain` turns it into words (a 409 says what changed).
 */
export function ActionButton(props: {
  label: string;
  title: string;
  /** What the dialog says the action will do. */
  description: ReactNode;
  reasonRequired?: boolean;
  danger?: boolean;
  /** Shown but not offered (the state does not allow it now); the button keeps its place and its last message. */
  disabled?: boolean;
  run: (reason: string) => Promise<string>;
  explain?: (err: unknown) => Promise<ReactNode>;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<ReactNode>();
  const [done, setDone] = useState<string>();
  const id = useId();
  const required = props.reasonRequired ?? true;

  useEffect(() => {
    if (!done) return;
    const t = setTimeout(() => setDone(undefined), 6000);
    return () => clearTimeout(t);
  }, [done]);

  // The action and its description as they were when the dialog opened: what is sent is what
  // the person saw (the status version shown), even if a poll refreshed the page meanwhile.
  const [frozen, setFrozen] = useState<{ run: typeof props.run; explain: typeof props.explain; description: ReactNode }>();
  const open = () => {
    setReason("");
    setFailure(undefined);
    setFrozen({ run: props.run, explain: props.explain, description: props.description });
    ref.current?.showModal();
  };
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setFailure(undefined);
    try {
      if (!frozen) return;
      const message = await frozen.run(reason.trim());
      ref.current?.close();
      setDone(message);
    } catch (err) {
      setFailure(frozen?.explain ? await frozen.explain(err) : describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" className={props.danger ? "danger" : undefined} onClick={open} disabled={props.disabled}>
        {props.label}
      </button>
      {done && (
        <span role="status" className="done">
          {done}
        </span>
      )}
      <dialog ref={ref} aria-labelledby={`${id}-t`}>
        <form onSubmit={submit}>
          <h2 id={`${id}-t`}>{props.title}</h2>
          <div>{frozen?.description}</div>
          <label htmlFor={`${id}-r`}>Reason{required ? "" : " (optional)"}</label>
          <textarea id={`${id}-r`} value={reason} onChange={(e) => setReason(e.target.value)} required={required} rows={3} />
          {failure && (
            <div role="alert" className="error">
              {failure}
            </div>
          )}
          <div className="buttons">
            <button type="submit" disabled={busy} className={props.danger ? "danger" : undefined}>
              Confirm {props.label.toLowerCase()}
            </button>
            <button type="button" onClick={() => ref.current?.close()}>
              Close
            </button>
          </div>
        </form>
      </dialog>
    </>
  );
}

/** Ticks every second, for countdowns computed on the page. */
export function useNow(periodMs = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), periodMs);
    return () => clearInterval(t);
  }, [periodMs]);
  return now;
}

/**
 * Previous and Next over a list the server pages with tokens. `pages` holds the tokens of the
 * pages up to the one shown ("" for the first), so Previous goes back exactly; Next pushes the
 * token the server returned, and is disabled on the last page.
 */
export function Pager({ pages, setPages, nextPageToken }: { pages: readonly string[]; setPages: Dispatch<SetStateAction<string[]>>; nextPageToken: string | undefined }) {
  return (
    <div className="pager">
      <button type="button" disabled={pages.length === 1} onClick={() => setPages((p) => p.slice(0, -1))}>
        Previous page
      </button>
      <button type="button" disabled={!nextPageToken} onClick={() => nextPageToken && setPages((p) => [...p, nextPageToken])}>
        Next page
      </button>
    </div>
  );
}

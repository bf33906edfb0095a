import { useQuery, useQueryClient } from "@tanstack/react-query";
import { api } from "./api.js";
import { useSession } from "./auth.js";
import { ActionButton, ErrorNote, useNow } from "./components.js";
import { ago, when } from "./format.js";

const POLL_MS = 3000;

/** The emergency stop as the store holds it, read by every page (the same query: one request per poll). */
export function useEmergency() {
  const { can } = useSession();
  return useQuery({
    queryKey: ["emergency"],
    queryFn: () => api.operations.getEmergencyStatus({}),
    enabled: can("fleet:read"),
    refetchInterval: POLL_MS,
  });
}

function useAfterChange() {
  const queryClient = useQueryClient();
  return () => Promise.all([queryClient.invalidateQueries({ queryKey: ["emergency"] }), queryClient.invalidateQueries({ queryKey: ["rollouts"] })]);
}

/** The button of the header: stops every rollout, asking for a reason. Only for callers holding emergency:stop; disabled while a stop is in force. */
export function EmergencyStopButton() {
  const { can } = useSession();
  const status = useEmergency();
  const refresh = useAfterChange();
  if (!can("emergency:stop") || !status.data) return null;
  return (
    <ActionButton
      label="Emergency stop"
      disabled={status.data.state?.active}
      title="Emergency stop of every rollout"
      danger
      description={
        <p>
          Halts every active or paused rollout plan with your reason, in one transaction, and refuses new plans and unstaged releases until the stop is
          lifted. No node's desired release changes meanwhile: installs already running finish and ack, none starts. Halted plans stay halted after the
          resume; each is resumed on its own.
        </p>
      }
      run={async (reason) => {
        const res = await api.operations.emergencyStop({ reason });
        await refresh();
        if (!res.changed) return "A stop was already in force: nothing changed";
        return `Emergency stop in force: halted ${res.haltedPlanIds.length} plan(s)${res.haltedPlanIds.length > 0 ? `: ${res.haltedPlanIds.join(", ")}` : ""}`;
      }}
    />
  );
}

/** On every page while a stop is in force: since when, by whom, why; and the resume for callers holding emergency:stop. */
export function EmergencyBanner() {
  const { can } = useSession();
  const status = useEmergency();
  const now = useNow(5000);
  const refresh = useAfterChange();
  const s = status.data?.state;
  if (!s?.active) return status.error && can("fleet:read") ? <ErrorNote error={status.error} /> : null;
  return (
    <section className="estop" aria-labelledby="estop-h" data-testid="emergency-banner">
      <h2 id="estop-h">Emergency stop in force</h2>
      <p>
        Since <strong>{when(s.since)}</strong> ({ago(s.since, now)}) by <strong>{s.stoppedBy}</strong>: “{s.reason}”.
      </p>
      <p>
        Every rollout plan that was active or paused is halted; no node's desired release changes and no install starts; new plans and unstaged
        releases are refused. After the resume, halted plans stay halted until each is resumed on the Rollouts page.
      </p>
      {can("emergency:stop") && (
        <div className="actions">
          <ActionButton
            label="Resume"
            title="Lift the emergency stop"
            description={<p>Lifts the stop: plans can be created and resumed again. The plans it halted stay halted until each is resumed.</p>}
            run={async (reason) => {
              const res = await api.operations.emergencyResume({ reason });
              await refresh();
              return res.changed ? "Emergency stop lifted; halted plans stay halted" : "No stop was in force: nothing changed";
            }}
          />
        </div>
      )}
    </section>
  );
}

import { keepPreviousData, useQuery, useQueryClient } from "@tanstack/react-query";
import type { ReactNode } from "react";
import type { Rollout, RolloutStatus } from "../../../gen/autonomy/v1/rollouts_pb.js";
import { api, Code, ConnectError, describeError } from "../api.js";
import { useSession } from "../auth.js";
import { ActionButton, ErrorNote, StackedBar, useNow } from "../components.js";
import { PHASE_ACTIONS, waitingOn, when } from "../format.js";

const POLL_MS = 2000;

type PlanAction = "pause" | "resume" | "promote" | "halt" | "cancel";
type Recovery = "retry" | "rollback" | "abort" | "skip_failed";

const ACTION_TEXT: Record<PlanAction | Recovery, { label: string; does: string; danger?: boolean }> = {
  pause: { label: "Pause", does: "Progression stops; nodes keep what they have." },
  resume: { label: "Resume", does: "The plan is active again and its stage is re-evaluated." },
  promote: { label: "Promote", does: "The open stage is passed by force and the next one opens (or the plan completes)." },
  halt: { label: "Halt", does: "The plan halts, as a failing gate would.", danger: true },
  cancel: { label: "Cancel", does: "The plan ends for good; nodes already moved keep the release.", danger: true },
  retry: { label: "Recover: retry", does: "Back to active; the stage is re-evaluated." },
  rollback: {
    label: "Recover: roll back",
    does: "Every node the plan moved gets back the release it ran before; the plan ends rolled back once they run it.",
    danger: true,
  },
  abort: { label: "Recover: abort", does: "The plan ends for good where it is: no further node is moved, nodes keep what they have.", danger: true },
  skip_failed: { label: "Recover: skip failed", does: "The open stage is force-passed past its failures and the next one opens." },
};

/** A 409 aborted in words: what the plan looks like now, read again from the server. */
async function explainConflict(err: unknown, planId: string, shownVersion: number): Promise<ReactNode> {
  const e = ConnectError.from(err);
  if (e.code !== Code.Aborted) return describeError(err);
  try {
    const now = await api.rollouts.getRolloutStatus({ planId });
    const s = now.status!;
    return (
      <>
        <strong>Someone changed this plan while you were looking at it.</strong> You saw version {shownVersion}; it is now at version{" "}
        {s.version}, phase <strong>{s.phase}</strong>
        {s.currentStageId && `, stage ${s.currentStageId}`}
        {s.reason && ` (${s.reason})`}. Nothing was done. The page now shows the new state: close this dialog, check it, and act again if the action still makes sense.
      </>
    );
  } catch {
    return describeError(err);
  }
}

function PlanCard({ r }: { r: Rollout }) {
  const { can } = useSession();
  const now = useNow();
  const queryClient = useQueryClient();
  const plan = r.plan!;
  const status = r.status!;
  const current = status.stages.find((s) => s.stageId === status.currentStageId);
  const live = ["active", "paused", "halted"].includes(status.phase) && current !== undefined;
  const gates = useQuery({
    queryKey: ["gates", plan.planId, status.currentStageId, status.version],
    queryFn: () => api.rollouts.getStageGates({ planId: plan.planId, stageId: status.currentStageId }),
    enabled: live,
    refetchInterval: POLL_MS,
    placeholderData: keepPreviousData,
  });
  const allowed = new Set(PHASE_ACTIONS[status.phase] ?? []);
  const manage = can("rollout:manage");
  const version = status.version;
  const refresh = () => queryClient.invalidateQueries({ queryKey: ["rollouts"] });
  const done = (s: RolloutStatus | undefined, what: string) => `${what}: now ${s?.phase ?? "?"} (version ${s?.version ?? "?"})`;

  const act = async (action: PlanAction, reason: string) => {
    const req = { planId: plan.planId, reason, expectedVersion: version };
    const res =
      action === "pause"
        ? await api.rollouts.pauseRollout(req)
        : action === "resume"
          ? await api.rollouts.resumeRollout(req)
          : action === "promote"
            ? await api.rollouts.promoteRollout(req)
            : action === "halt"
              ? await api.rollouts.haltRollout(req)
              : await api.rollouts.cancelRollout(req);
    await refresh();
    return done(res.status, ACTION_TEXT[action].label);
  };
  const explain = (err: unknown) => {
    void refresh();
    return explainConflict(err, plan.planId, version);
  };
  const manualOpen =
    (current?.phase === "open" || current?.phase === "waiting") &&
    !current.manualApproved && plan.stages.find((s) => s.stageId === current.stageId)?.gates.some((g) => g.kind === "manual");
  const actionButton = (a: PlanAction | Recovery, run: (reason: string) => Promise<string>) => (
    <ActionButton
      key={a}
      label={ACTION_TEXT[a].label}
      title={`${ACTION_TEXT[a].label} plan ${plan.planId}`}
      danger={ACTION_TEXT[a].danger}
      description={
        <p>
          {ACTION_TEXT[a].does} Sent with the status version shown here ({version}): if the plan changed meanwhile, nothing is done.
        </p>
      }
      run={run}
      explain={explain}
    />
  );

  return (
    <article className="card plan" aria-label={`plan ${plan.planId}`}>
      <h2>
        {plan.planId} <span className={`badge p-${status.phase}`}>{status.phase}</span>
      </h2>
      <p className="muted">
        release {plan.releaseId} on {plan.channel} · version {version} · updated {when(status.updatedAt)}
        {plan.description && ` · ${plan.description}`}
      </p>
      <p className="waiting" data-testid="waiting">
        {waitingOn(plan, status, gates.data?.gates, now)}
      </p>
      <ol className="stages">
        {status.stages.map((st) => (
          <li key={st.stageId} className={st.stageId === status.currentStageId ? "current" : undefined}>
            <div className="stage-head">
              <strong>{st.stageId}</strong> <span className={`badge s-${st.phase}`}>{st.phase}</span>
              <span className="muted">
                {st.nodeCount} node(s){st.manualApproved ? " · approved" : ""}
                {st.detail && ` · ${st.detail}`}
              </span>
            </div>
            <StackedBar
              label={`stage ${st.stageId}`}
              segments={[
                { label: "healthy", value: st.healthy, tone: "ok" },
                { label: "failed", value: st.failed, tone: "bad" },
                { label: "unreachable", value: st.unreachable, tone: "warn" },
                { label: "pending", value: st.pending, tone: "wait" },
              ]}
            />
          </li>
        ))}
      </ol>
      {live && gates.data && (
        <ul className="gates" aria-label={`gates of stage ${status.currentStageId}`}>
          {gates.data.gates.map((g) => (
            <li key={g.kind}>
              <span className={`badge ${g.passed ? "ok" : "wait"}`}>{g.passed ? "passed" : "waiting"}</span> {g.kind}: {g.detail}
            </li>
          ))}
        </ul>
      )}
      <ErrorNote error={gates.error} />
      {(manage || can("gate:approve")) && allowed.size > 0 && (
        <div className="actions" aria-label={`actions on ${plan.planId}`}>
          {manualOpen && can("gate:approve") && allowed.has("approve") && (
            <ActionButton
              label="Approve"
              title={`Approve stage ${current!.stageId} of ${plan.planId}`}
              description={<p>Marks the manual gate of stage {current!.stageId} passed; the stage advances when every other gate passes too.</p>}
              run={async (reason) => {
                const res = await api.rollouts.approveGate({ planId: plan.planId, stageId: current!.stageId, reason, expectedVersion: version });
                await refresh();
                return res.message;
              }}
              explain={explain}
            />
          )}
          {manage &&
            (["pause", "resume", "promote", "halt", "cancel"] as const).filter((a) => allowed.has(a)).map((a) => actionButton(a, (reason) => act(a, reason)))}
          {manage &&
            (["retry", "rollback", "abort", "skip_failed"] as const)
              .filter((a) => allowed.has(a) && (a !== "retry" || status.phase !== "active"))
              .map((a) =>
                actionButton(a, async (reason) => {
                  const res = await api.rollouts.recoverRollout({ planId: plan.planId, strategy: a, reason, expectedVersion: version });
                  await refresh();
                  return res.message;
                }),
              )}
        </div>
      )}
    </article>
  );
}

export function RolloutsPage() {
  const plans = useQuery({
    queryKey: ["rollouts"],
    queryFn: () => api.rollouts.listRolloutPlans({ limit: 50 }),
    refetchInterval: POLL_MS,
    placeholderData: keepPreviousData,
  });
  return (
    <section aria-labelledby="rollouts-h">
      <h1 id="rollouts-h">Rollouts</h1>
      <ErrorNote error={plans.error} />
      {plans.data?.rollouts.length === 0 && <p>No rollout plan yet.</p>}
      {plans.data?.rollouts.map((r) => <PlanCard key={r.plan!.planId} r={r} />)}
    </section>
  );
}

/**
 * What a replica spec may hold, shared by the server's Apply validation and the agent's check of
 * each command it gets (src/agent/workloads/spec.ts): the server accepts exactly what agents run.
 */

/** What the agent does when a replica's process ends on its own (not stopped by a command). */
export type RestartPolicy = "always" | "on-failure" | "never";
export const RESTART_POLICIES: readonly RestartPolicy[] = ["always", "on-failure", "never"];

/** Variables the agent sets in every replica's environment; a spec may not set them. */
export const RESERVED_ENV = ["AUTONOMY_REPLICA_ID", "AUTONOMY_SERVICE", "AUTONOMY_REPLICA_INDEX", "AUTONOMY_GENERATION", "AUTONOMY_REPLICA_INSTANCE"] as const;

/** A service name: letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most 63 characters. */
export const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
/** An environment variable name. */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const MAX_COMMAND_CHARS = 4096;
export const MAX_ARGS = 1024;
export const MAX_ARG_CHARS = 65536;
export const MAX_ENV = 1024;
export const MAX_COMMAND_ID_CHARS = 256;

/** The message of a service name that SERVICE_NAME refuses. */
export const SERVICE_NAME_RULE = "must be letters, digits, '-', '_' or '.', start with a letter or digit and be at most 63 characters";

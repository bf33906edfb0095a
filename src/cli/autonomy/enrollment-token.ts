import { Command, InvalidArgumentError, Option } from "commander";
import { CreateEnrollmentTokenResponseSchema, ListEnrollmentTokensResponseSchema, RevokeEnrollmentTokenResponseSchema } from "../../../clients/index.js";
import { writeFileAtomic } from "../../files.js";
import { escapeControl, formatTable, formatTime, printMessage } from "../shared/output.js";
import { formatDuration, parseDuration } from "../shared/parse.js";
import { withClients } from "./context.js";

const MAX_TTL_MS = 7 * 86_400_000;

/** A token's lifetime: whole seconds, 1s to 7d. */
function parseTtl(value: string): number {
  const ms = parseDuration(value);
  if (ms < 1000 || ms > MAX_TTL_MS || ms % 1000 !== 0) throw new InvalidArgumentError(`"${value}": a token lives whole seconds, 1s to 7d (examples: 15m, 2h, 1d)`);
  return ms / 1000;
}

const warn = (warnings: readonly string[]) => {
  for (const w of warnings) process.stderr.write(`autonomy: warning: ${w}\n`);
};

/** `autonomy node enrollment-token`: one-time tokens with which a node gets its certificate (edgectl enroll --token). */
export function enrollmentTokenCommand(): Command {
  const token = new Command("enrollment-token").description(
    "One-time enrolment tokens: a node that presents one (edgectl enroll --token) gets a node certificate from the server's CA (serve --ca-dir) for a key it made itself. The server keeps only a token's hash.",
  );
  token
    .command("create")
    .description("Make a token that enrols one node id on one channel, once, until it expires; it is printed once.")
    .requiredOption("--node-id <id>", "the node it enrols (the certificate's CN): letters, digits, dots, dashes, underscores")
    .requiredOption("--channel <name>", "the release channel the node follows")
    .addOption(new Option("--ttl <duration>", "how long it can be used, 1s to 7d: 15m, 2h, 1d").argParser(parseTtl).default(900, "15m"))
    .option("--output-file <file>", "write the token to this file (mode 0600) instead of printing it")
    .action((opts: { nodeId: string; channel: string; ttl: number; outputFile?: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.enrollment.createEnrollmentToken({ nodeId: opts.nodeId, channel: opts.channel, ttlSeconds: opts.ttl });
        warn(res.warnings);
        const info = res.info!;
        const what = `enrolment token ${info.tokenId} for node ${escapeControl(info.nodeId)} on channel ${escapeControl(info.channel)}, valid until ${formatTime(info.expiresAt)} (${formatDuration(opts.ttl * 1000)})`;
        if (opts.outputFile) {
          writeFileAtomic(opts.outputFile, `${res.token}\n`, 0o600);
          if (options.output !== "text") return printMessage(options.output, CreateEnrollmentTokenResponseSchema, { ...res, token: "" });
          process.stdout.write(`${what}, written to ${opts.outputFile}\n`);
          return;
        }
        if (options.output !== "text") return printMessage(options.output, CreateEnrollmentTokenResponseSchema, res);
        process.stdout.write(`${res.token}\n`);
        process.stderr.write(`${what}; it is not shown again. On the node: edgectl enroll --token TOKEN\n`);
      }),
    );
  token
    .command("list")
    .description("List tokens, newest first, with their state (unused, used, expired, revoked); never their secrets.")
    .option("--node-id <id>", "only this node's tokens")
    .action((opts: { nodeId?: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.enrollment.listEnrollmentTokens({ nodeId: opts.nodeId });
        if (options.output !== "text") return printMessage(options.output, ListEnrollmentTokensResponseSchema, res);
        if (res.tokens.length === 0) return void process.stdout.write(opts.nodeId ? `no enrolment token for node ${escapeControl(opts.nodeId)}\n` : "no enrolment tokens\n");
        process.stdout.write(
          formatTable(
            ["TOKEN", "NODE", "CHANNEL", "STATE", "EXPIRES", "CREATED BY", "CERTIFICATE"],
            res.tokens.map((t) => [t.tokenId, t.nodeId, t.channel, t.state, formatTime(t.expiresAt), t.createdBy, t.certificateSerial || "-"]),
          ),
        );
      }),
    );
  token
    .command("revoke")
    .description("Make an unused token unusable at once (a used one enrols nothing more: revoke the node's certificate instead).")
    .requiredOption("--token-id <id>", "the id enrollment-token list shows")
    .action((opts: { tokenId: string }, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.enrollment.revokeEnrollmentToken({ tokenId: opts.tokenId });
        if (options.output !== "text") return printMessage(options.output, RevokeEnrollmentTokenResponseSchema, res);
        const info = res.info!;
        process.stdout.write(
          info.state === "revoked" ? `enrolment token ${info.tokenId} (node ${escapeControl(info.nodeId)}) revoked\n` : `enrolment token ${info.tokenId} had expired; nothing changed\n`,
        );
      }),
    );
  return token;
}

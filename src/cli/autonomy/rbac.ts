import { mkdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { toJson } from "@bufbuild/protobuf";
import { Command, Option } from "commander";
import { ListBindingsResponseSchema, ListRolesResponseSchema, ListTokensResponseSchema, WhoAmIResponseSchema } from "../../../clients/index.js";
import { fileErrorReason, writeFileAtomic } from "../../files.js";
import { formatTable, formatTime, printMessage, printValue } from "../shared/output.js";
import { parseHours, parsePositiveInt } from "../shared/parse.js";
import { withClients } from "./context.js";

const collect = (v: string, all: string[] = []) => [...all, v];
const warn = (warnings: readonly string[]) => {
  for (const w of warnings) process.stderr.write(`autonomy: warning: ${w}\n`);
};

/** AUTONOMY_RBAC_DIR, else $XDG_CONFIG_HOME/autonomy/rbac. */
function defaultRbacDir(): string {
  return process.env.AUTONOMY_RBAC_DIR || path.join(process.env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config"), "autonomy", "rbac");
}

const ROLES_FILE = "roles.json";
const BINDINGS_FILE = "bindings.json";

interface ExportedRole {
  name: string;
  permissions: string[];
}
interface ExportedBinding {
  principal: string;
  role: string;
}

function readJsonArray<T>(file: string): T[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`${file}: ${fileErrorReason(err)}`);
  }
  if (!Array.isArray(parsed)) throw new Error(`${file}: expected a JSON array`);
  return parsed as T[];
}

/** `autonomy rbac`: roles, who holds them, tokens; export and import of the role data. */
export function rbacCommand(): Command {
  const rbac = new Command("rbac").description(
    "Roles and who holds them (enforced by the server), and bearer tokens. Principals are operator:NAME or node:ID.",
  );
  const role = new Command("role").description("Define, list, assign and revoke roles.");
  role
    .command("create")
    .description("Define a custom role (or redefine one of yours); built-in roles cannot be redefined.")
    .requiredOption("--name <name>", "role name")
    .requiredOption("--permission <resource:verb>", "a permission (repeatable), e.g. fleet:read", collect)
    .action((opts: { name: string; permission: string[] }, cmd: Command) =>
      withClients(cmd, async (api) => {
        const res = await api.rbac.createRole({ role: { name: opts.name, permissions: opts.permission } });
        warn(res.warnings);
        process.stdout.write(`role ${res.role!.name}: ${res.role!.permissions.join(", ")}\n`);
      }),
    );
  role
    .command("list")
    .description("List the built-in and custom roles, and who holds which.")
    .action((_opts: unknown, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const [roles, bindings] = await Promise.all([api.rbac.listRoles({}), api.rbac.listBindings({})]);
        if (options.output !== "text") {
          // One document: the roles and who holds them.
          const opts = { useProtoFieldName: true, alwaysEmitImplicit: true } as const;
          const doc = { ...(toJson(ListRolesResponseSchema, roles, opts) as object), ...(toJson(ListBindingsResponseSchema, bindings, opts) as object) };
          printValue(options.output, doc);
          return;
        }
        const holders = (name: string) => bindings.bindings.filter((b) => b.role === name).map((b) => b.principal);
        process.stdout.write(
          formatTable(
            ["ROLE", "KIND", "PERMISSIONS", "HELD BY"],
            roles.roles.map((r) => [r.name, r.builtin ? "built-in" : "custom", r.permissions.join(","), holders(r.name).join(",") || "-"]),
          ),
        );
      }),
    );
  role
    .command("assign")
    .description("Give a principal a role.")
    .requiredOption("--principal <principal>", "operator:NAME or node:ID")
    .requiredOption("--role <role>", "role name")
    .action((opts: { principal: string; role: string }, cmd: Command) =>
      withClients(cmd, async (api) => {
        await api.rbac.assignRole(opts);
        process.stdout.write(`${opts.principal} holds ${opts.role}\n`);
      }),
    );
  role
    .command("revoke")
    .description("Take a role from a principal.")
    .requiredOption("--principal <principal>", "operator:NAME or node:ID")
    .requiredOption("--role <role>", "role name")
    .option("--force", "revoke even the last binding that grants rbac:manage")
    .action((opts: { principal: string; role: string; force?: boolean }, cmd: Command) =>
      withClients(cmd, async (api) => {
        const res = await api.rbac.revokeRole({ principal: opts.principal, role: opts.role, force: opts.force === true });
        warn(res.warnings);
        process.stdout.write(res.revoked ? `${opts.principal} no longer holds ${opts.role}\n` : `${opts.principal} did not hold ${opts.role}; nothing changed\n`);
      }),
    );
  rbac.addCommand(role);

  const token = new Command("token").description("Bearer tokens: for operators without a client certificate (and nodes, if need be).");
  token
    .command("create")
    .description("Create a token; it is printed once (the server keeps only its hash).")
    .requiredOption("--principal <principal>", "operator:NAME or node:ID")
    .addOption(new Option("--ttl <duration>", "lifetime, whole hours from 1h to 365d: 12h, 30d").argParser(parseHours).default(720, "30d"))
    .addOption(new Option("--ttl-hours <n>", "lifetime in hours (older spelling of --ttl)").argParser(parsePositiveInt).hideHelp())
    .option("--description <text>", "what it is for", "")
    .option("--output-file <file>", "write the token to this file (mode 0600) instead of printing it")
    .action((opts: { principal: string; ttl: number; ttlHours?: number; description: string; outputFile?: string }, cmd: Command) =>
      withClients(cmd, async (api) => {
        const res = await api.rbac.createToken({ principal: opts.principal, ttlHours: opts.ttlHours ?? opts.ttl, description: opts.description });
        warn(res.warnings);
        if (opts.outputFile) {
          writeFileAtomic(opts.outputFile, `${res.token}\n`, 0o600);
          process.stdout.write(`token ${res.info!.tokenId} for ${opts.principal}, valid until ${formatTime(res.info!.expiresAt)}, written to ${opts.outputFile}\n`);
        } else {
          process.stdout.write(`${res.token}\n`);
          process.stderr.write(`token ${res.info!.tokenId} for ${opts.principal}, valid until ${formatTime(res.info!.expiresAt)}; it is not shown again\n`);
        }
      }),
    );
  token
    .command("list")
    .description("List tokens (never their secrets).")
    .action((_opts: unknown, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.rbac.listTokens({});
        if (options.output !== "text") return printMessage(options.output, ListTokensResponseSchema, res);
        process.stdout.write(
          formatTable(
            ["TOKEN", "PRINCIPAL", "EXPIRES", "REVOKED", "DESCRIPTION"],
            res.tokens.map((t) => [t.tokenId, t.principal, formatTime(t.expiresAt), t.revokedAt ? formatTime(t.revokedAt) : "-", t.description]),
          ),
        );
      }),
    );
  token
    .command("revoke")
    .description("Revoke a token at once.")
    .requiredOption("--token-id <id>", "the id token list shows")
    .option("--force", "revoke even the last usable token of a principal holding rbac:manage")
    .action((opts: { tokenId: string; force?: boolean }, cmd: Command) =>
      withClients(cmd, async (api) => {
        const res = await api.rbac.revokeToken({ tokenId: opts.tokenId, force: opts.force === true });
        warn(res.warnings);
        process.stdout.write(`token ${opts.tokenId} revoked\n`);
      }),
    );
  rbac.addCommand(token);

  rbac
    .command("whoami")
    .description("Who the server takes you for, with your roles and permissions.")
    .action((_opts: unknown, cmd: Command) =>
      withClients(cmd, async (api, options) => {
        const res = await api.rbac.whoAmI({});
        if (options.output !== "text") return printMessage(options.output, WhoAmIResponseSchema, res);
        process.stdout.write(
          `${res.principal} (by ${res.authenticatedBy}); roles: ${res.roles.join(", ") || "none"}; permissions: ${res.permissions.join(", ") || "none"}` +
            `${res.enforced ? "" : "; RBAC enforcement is OFF on this server"}\n`,
        );
      }),
    );
  rbac
    .command("export")
    .description(`Write the custom roles and every binding to ${ROLES_FILE} and ${BINDINGS_FILE} in --dir (AUTONOMY_RBAC_DIR).`)
    .addOption(new Option("--dir <dir>", "directory").default(undefined, "AUTONOMY_RBAC_DIR or ~/.config/autonomy/rbac"))
    .action((opts: { dir?: string }, cmd: Command) =>
      withClients(cmd, async (api) => {
        const dir = opts.dir ?? defaultRbacDir();
        const [roles, bindings] = await Promise.all([api.rbac.listRoles({}), api.rbac.listBindings({})]);
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        const custom: ExportedRole[] = roles.roles.filter((r) => !r.builtin).map((r) => ({ name: r.name, permissions: r.permissions }));
        const held: ExportedBinding[] = bindings.bindings.map((b) => ({ principal: b.principal, role: b.role }));
        writeFileAtomic(path.join(dir, ROLES_FILE), JSON.stringify(custom, null, 2) + "\n");
        writeFileAtomic(path.join(dir, BINDINGS_FILE), JSON.stringify(held, null, 2) + "\n");
        process.stdout.write(`exported ${custom.length} custom role(s) and ${held.length} binding(s) to ${dir}\n`);
      }),
    );
  rbac
    .command("import")
    .description(`Apply ${ROLES_FILE} and ${BINDINGS_FILE} from --dir (AUTONOMY_RBAC_DIR): define the roles, then assign the bindings. Nothing is removed.`)
    .addOption(new Option("--dir <dir>", "directory").default(undefined, "AUTONOMY_RBAC_DIR or ~/.config/autonomy/rbac"))
    .action((opts: { dir?: string }, cmd: Command) =>
      withClients(cmd, async (api) => {
        const dir = opts.dir ?? defaultRbacDir();
        const roles = readJsonArray<ExportedRole>(path.join(dir, ROLES_FILE));
        const bindings = readJsonArray<ExportedBinding>(path.join(dir, BINDINGS_FILE));
        for (const r of roles) await api.rbac.createRole({ role: { name: r.name, permissions: r.permissions } });
        for (const b of bindings) await api.rbac.assignRole({ principal: b.principal, role: b.role });
        process.stdout.write(`imported ${roles.length} custom role(s) and ${bindings.length} binding(s) from ${dir}\n`);
      }),
    );
  return rbac;
}

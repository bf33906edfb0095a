import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { Command, Option } from "commander";
import {
  CA_CERT,
  CRL_FILE,
  checkRevocation,
  DEFAULT_CRL_DAYS,
  DEFAULT_LEAF_DAYS,
  initCa,
  issueCert,
  listCerts,
  revokeCerts,
  type IssuedCert,
} from "../../security/ca.js";
import { PROFILES, type Profile } from "../../security/pki.js";
import { formatTable, printValue, runCommand } from "../shared/output.js";
import { parseDays, parsePositiveInt } from "../shared/parse.js";
import { commandContext, outputOf, resolveOrchestratorUrl } from "./context.js";

/**
 * A certificate carries the roles bound to its principal: before issuing one for
 * operator:NAME or node:NAME, ask the orchestrator (when one is configured) whether that
 * principal holds a role, and refuse unless --force. Bootstrap principals are never a certificate.
 */
async function checkUnbound(cmd: Command, profile: Profile, name: string): Promise<void> {
  if (profile === "server") return;
  if (profile === "operator" && name.startsWith("bootstrap-")) {
    throw new Error(`--name "${name}": names starting with "bootstrap-" belong to bootstrap tokens`);
  }
  const principal = `${profile}:${name}`;
  const { options, clients } = commandContext(cmd);
  try {
    resolveOrchestratorUrl(options.orchestratorUrl);
  } catch {
    process.stderr.write(`autonomy: warning: issued without checking whether ${principal} holds a role (its certificate would carry it): no orchestrator URL\n`);
    return;
  }
  const api = clients();
  try {
    let roles: string[];
    try {
      roles = (await api.rbac.listBindings({ principal })).bindings.map((b) => b.role);
    } catch (err) {
      // A CA is often made before its orchestrator runs: with nobody to ask, say so and issue.
      if (err instanceof ConnectError && (err.code === Code.Unavailable || err.code === Code.DeadlineExceeded)) {
        process.stderr.write(
          `autonomy: warning: issued without checking whether ${principal} holds a role (its certificate would carry it): the orchestrator could not be reached\n`,
        );
        return;
      }
      throw new Error(`cannot check whether ${principal} holds a role (${(err as Error).message}); pass --force to issue anyway`);
    }
    if (roles.length > 0) {
      throw new Error(`${principal} holds ${roles.join(", ")}: a certificate with this name would carry ${roles.length === 1 ? "it" : "them"}; pass --force if that is meant`);
    }
  } finally {
    api.close();
  }
}

/** A validity: a duration of whole days (`--valid-for 825d`), or the older `--days N`. */
const validity = (what: string, days: number) => [
  new Option("--valid-for <duration>", `${what}, whole days: 90d, 825d`).argParser(parseDays).default(days, `${days}d`),
  new Option("--days <n>", `${what} in days (older spelling of --valid-for)`).argParser(parsePositiveInt).hideHelp(),
];
const daysOf = (o: { validFor: number; days?: number }) => o.days ?? o.validFor;
const collect = (v: string, all: string[] = []) => [...all, v];

interface CaDirOption {
  caDir: string;
}

const caDirOption = () =>
  new Option("--ca-dir <dir>", "the CA directory (ca.pem, ca-key.pem, crl.pem, certs.json)").env("AUTONOMY_CA_DIR").makeOptionMandatory();

function printIssued(c: IssuedCert, verb: string): void {
  process.stdout.write(
    `${verb} ${c.profile} certificate for ${c.name}: serial ${c.serial}, valid until ${c.notAfter}\n  certificate ${c.certFile}\n  key         ${c.keyFile} (mode 0600)\n`,
  );
}

/** `autonomy cert`: a small CA for mutual TLS, kept in a directory. */
export function certCommand(): Command {
  const cert = new Command("cert").description(
    "A certificate authority for mutual TLS, kept in --ca-dir: ECDSA P-256 keys, certificates for servers, nodes and operators, and the CRL servers read.",
  );
  cert
    .command("init-ca")
    .description("Create the CA (certificate, key and an empty CRL) in an empty directory.")
    .addOption(caDirOption())
    .option("--common-name <name>", "the CA's common name", "autonomy orchestrator CA")
    .addOption(validity("validity of the CA certificate", 3650)[0])
    .addOption(validity("validity of the CA certificate", 3650)[1])
    .action((opts: CaDirOption & { commonName: string; validFor: number; days?: number }) =>
      runCommand("autonomy", async () => {
        await initCa(opts.caDir, { commonName: opts.commonName, days: daysOf(opts) });
        process.stdout.write(
          `created the CA in ${opts.caDir}\n  ${path.join(opts.caDir, CA_CERT)}   give it to servers (--tls-ca-file) and clients (--tls-ca-file)\n` +
            `  ${path.join(opts.caDir, CRL_FILE)}  give it to servers (--tls-crl-file)\n`,
        );
      }),
    );
  cert
    .command("issue")
    .description(
      "Issue a certificate. node: a node's client certificate (CN = node id); operator: an operator's client certificate " +
        "(CN = operator name); server: a server certificate for the names given (localhost and 127.0.0.1 by default).",
    )
    .addOption(caDirOption())
    .addOption(new Option("--profile <profile>", "what the certificate is for").choices(PROFILES).makeOptionMandatory())
    .requiredOption("--name <name>", "node id, operator name or server name")
    .addOption(validity("validity", DEFAULT_LEAF_DAYS)[0])
    .addOption(validity("validity", DEFAULT_LEAF_DAYS)[1])
    .option("--dns <name>", "server: a DNS name (repeatable)", collect)
    .option("--ip <address>", "server: an IP address (repeatable)", collect)
    .option("--out-dir <dir>", "where to write the certificate and key (default: the CA directory)")
    .option("--force", "issue even when the principal of this name holds a role on the orchestrator")
    .action((opts: CaDirOption & { profile: Profile; name: string; validFor: number; days?: number; dns?: string[]; ip?: string[]; outDir?: string; force?: boolean }, cmd: Command) =>
      runCommand("autonomy", async () => {
        if (!opts.force) await checkUnbound(cmd, opts.profile, opts.name);
        const issued = await issueCert(opts.caDir, { profile: opts.profile, name: opts.name, days: daysOf(opts), dns: opts.dns, ips: opts.ip, outDir: opts.outDir });
        printIssued(issued, "issued");
      }),
    );
  cert
    .command("rotate")
    .description("Issue a fresh certificate for the same profile and name; --revoke-old also revokes the ones it replaces (and writes the CRL).")
    .addOption(caDirOption())
    .addOption(new Option("--profile <profile>", "profile of the certificate").choices(PROFILES).makeOptionMandatory())
    .requiredOption("--name <name>", "node id, operator name or server name")
    .addOption(validity("validity", DEFAULT_LEAF_DAYS)[0])
    .addOption(validity("validity", DEFAULT_LEAF_DAYS)[1])
    .option("--out-dir <dir>", "where to write the certificate and key (default: the CA directory)")
    .option("--revoke-old", "revoke the certificates of this name issued before")
    .action((opts: CaDirOption & { profile: Profile; name: string; validFor: number; days?: number; outDir?: string; revokeOld?: boolean }) =>
      runCommand("autonomy", async () => {
        const before = listCerts(opts.caDir).filter((c) => c.profile === opts.profile && c.name === opts.name && c.state !== "revoked");
        if (before.length === 0) throw new Error(`no ${opts.profile} certificate named "${opts.name}" to rotate; use \`cert issue\``);
        const issued = await issueCert(opts.caDir, { profile: opts.profile, name: opts.name, days: daysOf(opts), outDir: opts.outDir });
        printIssued(issued, "rotated:");
        if (opts.revokeOld) {
          for (const old of before) {
            const r = await revokeCerts(opts.caDir, { serial: old.serial });
            process.stdout.write(`revoked ${old.serial}; CRL number ${r.crlNumber} written to ${r.crlFile}\n`);
          }
        }
      }),
    );
  cert
    .command("revoke")
    .description("Revoke by --serial, or every valid certificate of --name, and write the next CRL; a server watching that file applies it within a second. --refresh re-signs the CRL without revoking anything (before it expires).")
    .addOption(caDirOption())
    .option("--serial <hex>", "serial number of the certificate")
    .option("--name <name>", "revoke every valid certificate of this name")
    .addOption(new Option("--profile <profile>", "with --name: only this profile").choices(PROFILES))
    .option("--refresh", "revoke nothing; write a new CRL number and validity")
    .addOption(new Option("--crl-valid-for <duration>", "validity of the CRL written, whole days: 7d, 30d").argParser(parseDays).default(DEFAULT_CRL_DAYS, `${DEFAULT_CRL_DAYS}d`))
    .addOption(new Option("--crl-days <n>", "validity of the CRL in days (older spelling of --crl-valid-for)").argParser(parsePositiveInt).hideHelp())
    .action((raw: CaDirOption & { serial?: string; name?: string; profile?: Profile; refresh?: boolean; crlValidFor: number; crlDays?: number }) =>
      runCommand("autonomy", async () => {
        const opts = { ...raw, crlDays: raw.crlDays ?? raw.crlValidFor };
        const targets = [opts.serial, opts.name, opts.refresh].filter((x) => x !== undefined).length;
        if (targets !== 1) throw new Error("say what to revoke: one of --serial, --name or --refresh");
        const r = await revokeCerts(opts.caDir, { serial: opts.serial, name: opts.name, profile: opts.profile, crlDays: opts.crlDays });
        for (const c of r.revoked) process.stdout.write(`revoked ${c.profile} ${c.name} (serial ${c.serial})\n`);
        process.stdout.write(`CRL number ${r.crlNumber} written to ${r.crlFile}, valid ${opts.crlDays} days\n`);
      }),
    );
  cert
    .command("list")
    .description("List the certificates issued, with their state (valid, expiring, expired, revoked).")
    .addOption(caDirOption())
    .addOption(new Option("--expiring-within <duration>", "mark (and list only) certificates that end within this long, whole days: 30d").argParser(parseDays))
    .addOption(new Option("--expiring-within-days <n>", "the same in days (older spelling)").argParser(parsePositiveInt).hideHelp())
    .action((raw: CaDirOption & { expiringWithin?: number; expiringWithinDays?: number }, cmd: Command) =>
      runCommand("autonomy", async () => {
        const opts = { ...raw, expiringWithinDays: raw.expiringWithinDays ?? raw.expiringWithin };
        let certs = listCerts(opts.caDir, { expiringWithinDays: opts.expiringWithinDays });
        if (opts.expiringWithinDays !== undefined) certs = certs.filter((c) => c.state === "expiring");
        const output = outputOf(cmd);
        if (output !== "text") {
          const rows = certs.map((c) => ({
            serial: c.serial,
            profile: c.profile,
            name: c.name,
            not_before: c.notBefore,
            not_after: c.notAfter,
            state: c.state,
            ...(c.revokedAt ? { revoked_at: c.revokedAt } : {}),
            ...(c.certFile ? { cert_file: c.certFile } : {}),
            ...(c.keyFile ? { key_file: c.keyFile } : {}),
            ...(c.origin ? { origin: c.origin } : {}),
          }));
          printValue(output, { certificates: rows, count: rows.length });
          return;
        }
        if (certs.length === 0) {
          process.stdout.write(opts.expiringWithinDays !== undefined ? `no certificate ends within ${opts.expiringWithinDays} days\n` : "no certificates issued\n");
          return;
        }
        process.stdout.write(formatTable(["SERIAL", "PROFILE", "NAME", "NOT AFTER", "STATE"], certs.map((c) => [c.serial, c.profile, c.name, c.notAfter, c.state])));
      }),
    );
  cert
    .command("check-revocation")
    .description("Check a certificate against a CRL (verified against the CA first). Exit status 0: not revoked; 3: revoked.")
    .requiredOption("--cert <file>", "the certificate (PEM)")
    .option("--crl <file>", "the CRL (default: crl.pem of --ca-dir)")
    .option("--ca <file>", "the CA certificate (default: ca.pem of --ca-dir)")
    .addOption(new Option("--ca-dir <dir>", "the CA directory").env("AUTONOMY_CA_DIR"))
    .action((opts: { cert: string; crl?: string; ca?: string; caDir?: string }) =>
      runCommand("autonomy", async () => {
        const crlFile = opts.crl ?? (opts.caDir && path.join(opts.caDir, CRL_FILE));
        const caFile = opts.ca ?? (opts.caDir && path.join(opts.caDir, CA_CERT));
        if (!crlFile || !caFile) throw new Error("name the CRL and CA: --crl and --ca, or --ca-dir");
        const r = await checkRevocation({ certFile: opts.cert, crlFile, caFile });
        process.stdout.write(`${r.subject} (serial ${r.serial}): ${r.revoked ? "REVOKED" : "not revoked"} by CRL number ${r.crlNumber}\n`);
        if (r.revoked) process.exitCode = 3;
      }),
    );
  return cert;
}

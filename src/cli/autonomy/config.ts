import path from "node:path";
import { Command, Option } from "commander";
import {
  CONFIG_KEYS,
  CONTEXT_FIELDS,
  checkUrl,
  configPath,
  getConfigValue,
  readConfig,
  setConfigValue,
  writeConfig,
  type ConfigContext,
} from "../shared/config.js";
import { formatTable, printValue, runCommand, UsageError } from "../shared/output.js";
import { outputOf } from "./context.js";

function checkKey(key: string): void {
  if (!(key in CONFIG_KEYS)) throw new UsageError(`unknown key "${key}"; known keys: ${Object.keys(CONFIG_KEYS).join(", ")}`);
}

interface ContextFlags {
  orchestratorUrl?: string;
  tokenFile?: string;
  tlsCaFile?: string;
  tlsCertFile?: string;
  tlsKeyFile?: string;
}

export function configCommand(): Command {
  const config = new Command("config").description(
    `Read and write the CLI configuration (${configPath()}; AUTONOMY_CONFIG names another file): named contexts that hold an orchestrator URL, a token file and TLS files.`,
  );
  const run = (cmd: Command, body: () => Promise<void> | void) => runCommand("autonomy", async () => body(), { format: () => outputOf(cmd) });
  config
    .command("set-context")
    .description(
      "Create or update a context; files are stored as absolute paths. Use it with `config use-context NAME` or `--context NAME`.",
    )
    .argument("<name>", "the context's name, e.g. lab or prod")
    // Local options: the global ones of the same names are for one command, these are stored.
    .option("--orchestrator-url <url>", "the orchestrator's URL")
    .option("--token-file <file>", "a file holding a bearer token")
    .option("--tls-ca-file <file>", "CA certificate the server's certificate must be signed by")
    .option("--tls-cert-file <file>", "client certificate for mutual TLS")
    .option("--tls-key-file <file>", "client private key for mutual TLS")
    .addOption(new Option("--use", "also make it the current context"))
    .action((name: string, opts: ContextFlags & { use?: boolean }, cmd: Command) =>
      run(cmd, () => {
        if (opts.orchestratorUrl) {
          const problem = checkUrl(opts.orchestratorUrl);
          if (problem) throw new UsageError(`--orchestrator-url: ${problem}`);
        }
        const file = readConfig();
        const ctx: ConfigContext = { ...(file.contexts?.[name] ?? {}) };
        if (opts.orchestratorUrl) ctx["orchestrator-url"] = opts.orchestratorUrl;
        if (opts.tokenFile) ctx["token-file"] = path.resolve(opts.tokenFile);
        if (opts.tlsCaFile) ctx["tls-ca-file"] = path.resolve(opts.tlsCaFile);
        if (opts.tlsCertFile) ctx["tls-cert-file"] = path.resolve(opts.tlsCertFile);
        if (opts.tlsKeyFile) ctx["tls-key-file"] = path.resolve(opts.tlsKeyFile);
        if (Boolean(ctx["tls-cert-file"]) !== Boolean(ctx["tls-key-file"])) throw new UsageError("--tls-cert-file and --tls-key-file go together");
        file.contexts = { ...(file.contexts ?? {}), [name]: ctx };
        if (opts.use || !file["current-context"]) file["current-context"] = name;
        writeConfig(file);
        process.stdout.write(`context ${name} saved${file["current-context"] === name ? " (current)" : ""} in ${configPath()}\n`);
      }),
    );
  config
    .command("use-context")
    .description("Make a context the current one: every command uses it unless --orchestrator-url or the environment says otherwise.")
    .argument("<name>", "a context made with set-context")
    .action((name: string, _opts: unknown, cmd: Command) =>
      run(cmd, () => {
        const file = readConfig();
        if (!file.contexts?.[name]) {
          const known = Object.keys(file.contexts ?? {});
          throw new UsageError(`no context "${name}" in ${configPath()}${known.length ? ` (known: ${known.join(", ")})` : "; make one with `autonomy config set-context`"}`);
        }
        file["current-context"] = name;
        writeConfig(file);
        process.stdout.write(`current context: ${name}\n`);
      }),
    );
  config
    .command("get-contexts")
    .description("List the contexts; the current one is marked with *.")
    .action((_opts: unknown, cmd: Command) =>
      run(cmd, () => {
        const file = readConfig();
        const contexts = file.contexts ?? {};
        const format = outputOf(cmd);
        if (format !== "text") return printValue(format, { current_context: file["current-context"] ?? null, contexts });
        if (Object.keys(contexts).length === 0) return void process.stdout.write("no contexts (autonomy config set-context NAME --orchestrator-url URL)\n");
        const rows = Object.entries(contexts).map(([name, c]) => [
          `${file["current-context"] === name ? "*" : " "} ${name}`,
          ...CONTEXT_FIELDS.map((f) => c[f] ?? "-"),
        ]);
        process.stdout.write(formatTable(["  NAME", "URL", "TOKEN FILE", "CA FILE", "CERT FILE", "KEY FILE"], rows));
      }),
    );
  config
    .command("delete-context")
    .description("Remove a context.")
    .argument("<name>")
    .action((name: string, _opts: unknown, cmd: Command) =>
      run(cmd, () => {
        const file = readConfig();
        if (!file.contexts?.[name]) throw new UsageError(`no context "${name}" in ${configPath()}`);
        delete file.contexts[name];
        if (file["current-context"] === name) delete file["current-context"];
        writeConfig(file);
        process.stdout.write(`context ${name} deleted\n`);
      }),
    );
  config
    .command("set")
    .description("Set a key, e.g. `autonomy config set orchestrator.url http://127.0.0.1:8888` (used when no context is current).")
    .argument("<key>", `one of: ${Object.keys(CONFIG_KEYS).join(", ")}`)
    .argument("<value>")
    .action((key: string, value: string, _opts: unknown, cmd: Command) =>
      run(cmd, () => {
        checkKey(key);
        const problem = CONFIG_KEYS[key](value);
        if (problem) throw new UsageError(`${key}: ${problem}`);
        setConfigValue(key, value);
        process.stdout.write(`${key} = ${value}\n`);
      }),
    );
  config
    .command("get")
    .description("Print a key's value from the config file (exit 1 when it is not set).")
    .argument("<key>", `one of: ${Object.keys(CONFIG_KEYS).join(", ")}`)
    .action((key: string, _opts: unknown, cmd: Command) =>
      run(cmd, () => {
        checkKey(key);
        const value = getConfigValue(readConfig(), key);
        if (value === undefined) throw new Error(`${key} is not set in ${configPath()}`);
        process.stdout.write(`${String(value)}\n`);
      }),
    );
  return config;
}

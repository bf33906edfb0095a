import { Command } from "commander";
import { CONFIG_KEYS, configPath, getConfigValue, readConfig, setConfigValue } from "../shared/config.js";
import { runCommand } from "../shared/output.js";

function checkKey(key: string): void {
  if (!(key in CONFIG_KEYS)) throw new Error(`unknown key "${key}"; known keys: ${Object.keys(CONFIG_KEYS).join(", ")}`);
}

export function configCommand(): Command {
  const config = new Command("config").description(`Read and write the CLI configuration (${configPath()})`);
  config
    .command("set")
    .description("Set a key, e.g. `autonomy config set orchestrator.url http://127.0.0.1:8888`")
    .argument("<key>", `one of: ${Object.keys(CONFIG_KEYS).join(", ")}`)
    .argument("<value>")
    .action(async (key: string, value: string) =>
      runCommand("autonomy", async () => {
        checkKey(key);
        const problem = CONFIG_KEYS[key](value);
        if (problem) throw new Error(`${key}: ${problem}`);
        setConfigValue(key, value);
        process.stdout.write(`${key} = ${value}\n`);
      }),
    );
  config
    .command("get")
    .description("Print a key's value from the config file (exit 1 when it is not set)")
    .argument("<key>", `one of: ${Object.keys(CONFIG_KEYS).join(", ")}`)
    .action(async (key: string) =>
      runCommand("autonomy", async () => {
        checkKey(key);
        const value = getConfigValue(readConfig(), key);
        if (value === undefined) throw new Error(`${key} is not set in ${configPath()}`);
        process.stdout.write(`${String(value)}\n`);
      }),
    );
  return config;
}

import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import YAML from "yaml";

/** Keys `autonomy config set|get` accepts, with a check of each value. */
export const CONFIG_KEYS: Record<string, (value: string) => string | undefined> = {
  "orchestrator.url": (value) => {
    try {
      const url = new URL(value);
      return url.protocol === "http:" || url.protocol === "https:" ? undefined : "the scheme must be http or https";
    } catch {
      return "not a URL (example: http://127.0.0.1:8888)";
    }
  },
};

/** `$XDG_CONFIG_HOME/autonomy/config.yaml`, falling back to `~/.config/autonomy/config.yaml`. */
export function configPath(): string {
  const base = process.env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config");
  return path.join(base, "autonomy", "config.yaml");
}

export type Config = Record<string, Record<string, unknown>>;

export function readConfig(file = configPath()): Config {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw err;
  }
  const parsed = YAML.parse(text) as unknown;
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== "object" || Array.isArray(parsed)) throw new Error(`${file}: expected a mapping at the top level`);
  return parsed as Config;
}

export function getConfigValue(config: Config, key: string): unknown {
  const [section, name] = key.split(".");
  return config[section]?.[name];
}

/** Sets one key and writes the file atomically (a temporary file renamed over it). */
export function setConfigValue(key: string, value: string, file = configPath()): void {
  const config = readConfig(file);
  const [section, name] = key.split(".");
  config[section] = { ...(config[section] ?? {}), [name]: value };
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, YAML.stringify(config), { mode: 0o600 });
  renameSync(tmp, file);
}

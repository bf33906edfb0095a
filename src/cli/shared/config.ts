import { mkdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import YAML from "yaml";
import { writeFileAtomic } from "../../files.js";

/** Keys `autonomy config set|get` accepts, with a check of each value. */
export const CONFIG_KEYS: Record<string, (value: string) => string | undefined> = {
  "orchestrator.url": checkUrl,
};

/** Why a value is not an orchestrator URL, or undefined. */
export function checkUrl(value: string): string | undefined {
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? undefined : "the scheme must be http or https";
  } catch {
    return "not a URL (example: http://127.0.0.1:8888)";
  }
}

/** `$XDG_CONFIG_HOME/autonomy/config.yaml`, falling back to `~/.config/autonomy/config.yaml`. */
export function configPath(): string {
  if (process.env.AUTONOMY_CONFIG) return process.env.AUTONOMY_CONFIG;
  const base = process.env.XDG_CONFIG_HOME || path.join(os.homedir(), ".config");
  return path.join(base, "autonomy", "config.yaml");
}

/** A named set of connection settings (`autonomy config set-context`). */
export interface ConfigContext {
  "orchestrator-url"?: string;
  "token-file"?: string;
  "tls-ca-file"?: string;
  "tls-cert-file"?: string;
  "tls-key-file"?: string;
}
export const CONTEXT_FIELDS = ["orchestrator-url", "token-file", "tls-ca-file", "tls-cert-file", "tls-key-file"] as const;

export interface Config {
  "current-context"?: string;
  contexts?: Record<string, ConfigContext>;
  orchestrator?: { url?: string };
  [section: string]: unknown;
}

export function readConfig(file = configPath()): Config {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new Error(`${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = YAML.parse(text) as unknown;
  } catch (err) {
    throw new Error(`${file}: not YAML (${(err as Error).message.split("\n")[0]})`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== "object" || Array.isArray(parsed)) throw new Error(`${file}: expected a mapping at the top level`);
  return parsed as Config;
}

export function writeConfig(config: Config, file = configPath()): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, YAML.stringify(config), 0o600);
}

export function getConfigValue(config: Config, key: string): unknown {
  const [section, name] = key.split(".");
  return (config[section] as Record<string, unknown> | undefined)?.[name];
}

/** Sets one key and writes the file atomically. */
export function setConfigValue(key: string, value: string, file = configPath()): void {
  const config = readConfig(file);
  const [section, name] = key.split(".");
  config[section] = { ...((config[section] as Record<string, unknown>) ?? {}), [name]: value };
  writeConfig(config, file);
}

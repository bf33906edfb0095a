import { readFlagFile } from "../../files.js";
import { Option, type Command } from "commander";
import { UsageError } from "./output.js";

/** The TLS and credential flags of the client programs (autonomy, edgectl). */
export interface ClientTlsFlags {
  tlsCertFile?: string;
  tlsKeyFile?: string;
  tlsCaFile?: string;
  tokenFile?: string;
}

export function addClientTlsOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option("--tls-ca-file <path>", "CA certificate (PEM) the server's certificate must be signed by (https:// URLs)").env("AUTONOMY_TLS_CA_FILE"))
    .addOption(new Option("--tls-cert-file <path>", "this client's certificate (PEM), for servers that require mutual TLS").env("AUTONOMY_TLS_CERT_FILE"))
    .addOption(new Option("--tls-key-file <path>", "this client's private key (PEM)").env("AUTONOMY_TLS_KEY_FILE"))
    .addOption(
      new Option("--token-file <path>", "a file holding a bearer token (autonomy rbac token create; AUTONOMY_TOKEN holds one directly)").env(
        "AUTONOMY_TOKEN_FILE",
      ),
    );
}

/** A file a flag names; a missing or unreadable one is a usage error. */
function flagFile(flag: string, file: string): Buffer {
  try {
    return readFlagFile(flag, file);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** The bearer token: AUTONOMY_TOKEN, else the --token-file, else none. */
export function clientToken(flags: ClientTlsFlags): string | undefined {
  if (process.env.AUTONOMY_TOKEN) return process.env.AUTONOMY_TOKEN.trim();
  if (!flags.tokenFile) return undefined;
  const token = flagFile("--token-file", flags.tokenFile).toString("utf8").trim();
  if (token === "") throw new UsageError(`--token-file ${flags.tokenFile}: the file is empty`);
  return token;
}

/** The client TLS options the flags name, read from their files; undefined without any flag. */
export function clientTls(flags: ClientTlsFlags): { ca?: Buffer; cert?: Buffer; key?: Buffer } | undefined {
  if ((flags.tlsCertFile === undefined) !== (flags.tlsKeyFile === undefined)) {
    throw new UsageError("--tls-cert-file and --tls-key-file go together");
  }
  if (!flags.tlsCaFile && !flags.tlsCertFile) return undefined;
  return {
    ca: flags.tlsCaFile ? flagFile("--tls-ca-file", flags.tlsCaFile) : undefined,
    cert: flags.tlsCertFile ? flagFile("--tls-cert-file", flags.tlsCertFile) : undefined,
    key: flags.tlsKeyFile ? flagFile("--tls-key-file", flags.tlsKeyFile) : undefined,
  };
}

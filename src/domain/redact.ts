import { TOKEN_PREFIX } from "./identity.js";

/** What replaces a secret. */
export const REDACTED = "[redacted]";

/** Keys whose values are secrets whatever they hold. */
const SECRET_KEY = /^(?:.*[_-])?(?:password|passwd|pass|secret|token|authorization|cookie|set-cookie|credentials?|private_?key|api_?key|client_?secret)$/i;

const TOKEN = new RegExp(`\\b${TOKEN_PREFIX}[A-Za-z0-9_-]{16,}`, "g");
const PEM_PRIVATE = /-----BEGIN ([A-Z0-9 ]*?)PRIVATE KEY-----[\s\S]*?(?:-----END \1PRIVATE KEY-----|$)/g;
// A credential after the scheme: at least 8 characters, so prose ("basic auth") stays readable.
const AUTH_SCHEME = /(?<![A-Za-z])(Bearer|Basic)(\s+|%20)[A-Za-z0-9._~+/=-]{8,}/gi;
const URL_PASSWORD = /\b([a-z][a-z0-9+.-]*:\/\/[^\s:@/]*):[^\s@/]*@/gi;
const SECRET_PARAM = /([?&;](?:password|passwd|pass|token|access_token|auth|secret|api_key|apikey|key|sig|signature|sslpassword)=)[^&\s"';]*/gi;
const SECRET_ASSIGN = /\b((?:password|passwd|secret|token)\s*[=:]\s*)(?!\[redacted\])[^\s,;"'}]+/gi;

/** A string with every secret it carries replaced: tokens, private keys, bearer credentials, URL passwords. */
export function redactText(text: string): string {
  return text
    .replace(PEM_PRIVATE, `-----BEGIN $1PRIVATE KEY----- ${REDACTED} -----END $1PRIVATE KEY-----`)
    .replace(TOKEN, REDACTED)
    .replace(AUTH_SCHEME, `$1$2${REDACTED}`)
    .replace(URL_PASSWORD, `$1:${REDACTED}@`)
    .replace(SECRET_PARAM, `$1${REDACTED}`)
    .replace(SECRET_ASSIGN, `$1${REDACTED}`);
}

/** A JSON-like value with secret-named keys emptied and every string redacted, at any depth. */
export function redactValue(value: unknown): unknown {
  if (typeof value === "string") return redactText(value);
  if (Array.isArray(value)) return value.map(redactValue);
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = SECRET_KEY.test(k) && v !== null && v !== undefined && v !== "" && typeof v !== "boolean" ? REDACTED : redactValue(v);
    }
    return out;
  }
  return value;
}

/** A JSON line with its secrets redacted; a line that is not JSON is redacted as text. */
export function redactLine(line: string): string {
  try {
    return JSON.stringify(redactValue(JSON.parse(line)));
  } catch {
    return redactText(line);
  }
}

import { Command, Help, type Option, type Command as CommandType } from "commander";
import { buildInfo } from "../../build-info.js";
import { reportError, UsageError } from "./output.js";

/** Every command of a tree, the root first. */
export function walk(root: CommandType): CommandType[] {
  return [root, ...root.commands.flatMap(walk)];
}

/** The help layout of every command: wrapped to the terminal, required options marked, global options shown. */
class ProgramHelp extends Help {
  constructor() {
    super();
    this.showGlobalOptions = true;
    this.sortSubcommands = false;
  }
  override prepareContext(contextOptions: { error?: boolean; helpWidth?: number; outputHasColors?: boolean }): void {
    super.prepareContext(contextOptions);
    // Piped help (less, a file) wraps at 100 columns rather than commander's 80.
    const columns = (contextOptions.error ? process.stderr : process.stdout).columns;
    this.helpWidth = columns && columns > 20 ? columns : Number(process.env.COLUMNS) || 100;
  }
  override optionTerm(option: Option): string {
    return option.mandatory ? `${super.optionTerm(option)} (required)` : super.optionTerm(option);
  }
}

/** Finds the command a path of names leads to (`help rollout plan`), or says which name is unknown. */
function findCommand(root: CommandType, names: string[]): CommandType {
  let cmd = root;
  for (const name of names) {
    const next = cmd.commands.find((c) => c.name() === name || c.aliases().includes(name));
    if (!next) {
      const known = cmd.commands.map((c) => c.name()).filter((n) => n !== "help");
      throw Object.assign(new Error(`unknown command "${[...names.slice(0, names.indexOf(name)), name].join(" ")}" (${cmd.name()} has: ${known.join(", ")})`), {
        exitCode: 2,
      });
    }
    cmd = next;
  }
  return cmd;
}

/** Names an operator may type for a command that goes by another name in this tree. */
const SYNONYMS: Record<string, string[]> = {
  list: ["query", "ls", "show", "status"],
  ls: ["list", "query"],
  get: ["describe", "show", "query", "status"],
  show: ["describe", "status", "query", "list"],
  describe: ["show", "status"],
  rm: ["delete", "remove", "revoke"],
  remove: ["delete", "revoke", "prune"],
  delete: ["remove", "revoke", "prune"],
  new: ["create", "add"],
  add: ["create"],
  create: ["add", "new"],
};

/**
 * Commander's "unknown command" error, which suggests only a name a typo away: when none is,
 * a likely synonym's command is suggested, else every subcommand is listed, so
 * `autonomy audit list` points at `query` rather than only at the help.
 */
function unknownCommand(this: CommandType): never {
  const unknownName = this.args[0];
  const visible = this.createHelp().visibleCommands(this).filter((c) => c.name() !== "help");
  const names = visible.flatMap((c) => [c.name(), ...c.aliases()]);
  const close = names.filter((n) => editDistance(unknownName, n) <= Math.max(1, Math.floor(n.length / 3)));
  const synonyms = (SYNONYMS[unknownName] ?? []).filter((n) => names.includes(n));
  const suggested = [...new Set([...close, ...synonyms])];
  const hint = suggested.length
    ? ` (Did you mean ${suggested.join(" or ")}?)`
    : ` (${commandPath(this)} has: ${visible.map((c) => c.name()).join(", ")})`;
  this.error(`error: unknown command '${unknownName}'${hint}`, { code: "commander.unknownCommand", exitCode: 2 });
}

/** Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The format `-o`/`--output json|yaml` asks for anywhere on the command line (the last one
 * wins), read before parsing so that the parser's own errors come in that format too.
 */
export function requestedFormat(argv: string[]): "json" | "yaml" | undefined {
  let format: "json" | "yaml" | undefined;
  for (let i = 0; i < argv.length && argv[i] !== "--"; i++) {
    const arg = argv[i];
    const value =
      arg === "-o" || arg === "--output" ? argv[i + 1] : arg.startsWith("--output=") ? arg.slice("--output=".length) : /^-o[^-]/.test(arg) ? arg.slice(2) : undefined;
    if (value === "json" || value === "yaml") format = value;
  }
  return format;
}

/**
 * Finishes a program's command tree: `--version`, `help [command...]` at any depth, one help
 * layout, usage errors (unknown option, bad argument, missing required option) exiting with status
 * 2 in every command so scripts can tell them from failures of the operation (status 1).
 */
export function finishProgram(root: CommandType): CommandType {
  // `autonomy --help | head`: a reader that stops early ends the program quietly, not with a stack.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  // With -o json|yaml a usage error is a document on stderr like any other error, without the help hint.
  const format = requestedFormat(process.argv.slice(2));
  root.version(buildInfo().version, "-V, --version", "print the version and exit");
  root.helpCommand(false);
  root.addCommand(
    new Command("help")
      .description("Show the help of a command, e.g. `help rollout plan`")
      .argument("[command...]", "the command's names")
      .action((names: string[]) => {
        try {
          findCommand(root, names).outputHelp();
        } catch (err) {
          reportError(root.name(), new UsageError((err as Error).message), format);
        }
      }),
  );
  for (const cmd of walk(root)) {
    cmd.createHelp = () => Object.assign(new ProgramHelp(), cmd.configureHelp());
    cmd.exitOverride((err) => process.exit(err.exitCode === 1 ? 2 : err.exitCode));
    cmd.showSuggestionAfterError(true);
    if (cmd.commands.length) (cmd as unknown as { unknownCommand: () => never }).unknownCommand = unknownCommand.bind(cmd);
    if (format) {
      cmd.configureOutput({
        outputError: (message) => reportError(root.name(), new UsageError(message.trim().replace(/^error: /, "").replace(/\s*\n\s*/g, " ")), format),
      });
    } else cmd.showHelpAfterError(`(run \`${commandPath(cmd)} --help\` for usage)`);
  }
  return root;
}

/** "autonomy rollout plan": the names from the root to a command. */
export function commandPath(cmd: CommandType): string {
  const names: string[] = [];
  for (let c: CommandType | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** The width help is wrapped to: the terminal's, else $COLUMNS, else 100. */
export function helpWidth(): number {
  const columns = process.stdout.columns;
  return columns && columns > 20 ? columns : Number(process.env.COLUMNS) || 100;
}

/**
 * Wraps prose for `addHelpText`: each paragraph (lines separated by a blank line) that does not
 * start with a space is one sentence run, wrapped to the terminal; indented lines (tables,
 * examples) are kept as written.
 */
export function wrapProse(text: string, width = helpWidth()): string {
  return text
    .split(/\n\n/)
    .map((para) => {
      if (/^\s/.test(para) || para.includes("\n ")) return para;
      const words = para.replace(/\s*\n\s*/g, " ").split(" ");
      const lines: string[] = [];
      let line = "";
      for (const word of words) {
        if (line && line.length + 1 + word.length > width) {
          lines.push(line);
          line = word;
        } else line = line ? `${line} ${word}` : word;
      }
      if (line) lines.push(line);
      return lines.join("\n");
    })
    .join("\n\n");
}

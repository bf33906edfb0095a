import { Command, type Command as CommandType } from "commander";
import { walk } from "./program.js";

/** The words that may follow a command: its subcommands and its options (global ones included). */
function wordsOf(cmd: CommandType): string[] {
  const words = cmd.commands.map((c) => c.name());
  for (let c: CommandType | null = cmd; c; c = c.parent) {
    for (const o of c.options) if (!o.hidden && o.long) words.push(o.long);
  }
  return [...new Set(words)];
}

/** Space-separated path of subcommand names below the root ("" for the root). */
function pathOf(cmd: CommandType): string {
  const names: string[] = [];
  for (let c: CommandType | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** A bash completion script for the program: subcommands and options at every depth. */
export function bashCompletion(root: CommandType): string {
  const name = root.name();
  const fn = `_${name.replace(/[^A-Za-z0-9_]/g, "_")}_complete`;
  const cases = walk(root)
    .map((cmd) => `    "${pathOf(cmd)}") words="${wordsOf(cmd).join(" ")}" ;;`)
    .join("\n");
  const children = walk(root)
    .filter((cmd) => cmd.commands.length > 0)
    .map((cmd) => `    "${pathOf(cmd)}") kids=" ${cmd.commands.map((c) => c.name()).join(" ")} " ;;`)
    .join("\n");
  return `# bash completion for ${name}: source <(${name} completion bash)
${fn}() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" w i kids words
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    [[ "$w" == -* ]] && continue
    kids=""
    case "$path" in
${children}
    esac
    [[ "$kids" == *" $w "* ]] && path="\${path:+$path }$w"
  done
  words=""
  case "$path" in
${cases}
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F ${fn} ${name}
`;
}

/** A zsh completion script: the bash one, through zsh's bashcompinit. */
export function zshCompletion(root: CommandType): string {
  return `# zsh completion for ${root.name()}: source <(${root.name()} completion zsh)
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bashCompletion(root).split("\n").slice(1).join("\n")}`;
}

/** `PROGRAM completion bash|zsh`: prints the script; the tree is read when it runs, so it lists every command. */
export function completionCommand(root: () => CommandType): Command {
  return new Command("completion")
    .description("Print a shell completion script: `source <(PROGRAM completion bash)` in ~/.bashrc, or `completion zsh` in ~/.zshrc")
    .argument("<shell>", "bash or zsh")
    .action((shell: string) => {
      if (shell === "bash") process.stdout.write(bashCompletion(root()));
      else if (shell === "zsh") process.stdout.write(zshCompletion(root()));
      else {
        process.stderr.write(`${root().name()}: error: no completion for "${shell}" (bash or zsh)\n`);
        process.exitCode = 2;
      }
    });
}

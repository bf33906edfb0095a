import type { Command } from "commander";

/**
 * Makes usage errors (unknown option, bad argument) exit with status 2 in every command of
 * the tree, so scripts can tell them from failures of the operation itself (status 1).
 */
export function usageErrorsExit2(root: Command): Command {
  const visit = (cmd: Command) => {
    cmd.exitOverride((err) => process.exit(err.exitCode === 1 ? 2 : err.exitCode));
    cmd.showHelpAfterError("(run with --help for usage)");
    cmd.commands.forEach(visit);
  };
  visit(root);
  return root;
}

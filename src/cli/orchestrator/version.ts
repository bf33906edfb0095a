import { Command, Option } from "commander";
import { buildInfo } from "../../build-info.js";

export function versionCommand(): Command {
  return new Command("version")
    .description("Print the version, build SHA, build date, tier and runtime platform")
    .addOption(new Option("--output <format>", "output format").choices(["text", "json"]).default("text"))
    .action((opts: { output: "text" | "json" }) => {
      const info = buildInfo();
      if (opts.output === "json") {
        process.stdout.write(JSON.stringify(info, null, 2) + "\n");
        return;
      }
      process.stdout.write(
        `autonomy-orchestrator ${info.version}\n` +
          `  build sha:  ${info.build_sha}\n` +
          `  build date: ${info.build_date}\n` +
          `  tier:       ${info.tier}\n` +
          `  platform:   ${info.platform}\n`,
      );
    });
}

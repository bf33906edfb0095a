import { Command, Option } from "commander";
import { buildInfo } from "../../build-info.js";
import { OUTPUT_FORMATS, printValue, type OutputFormat } from "../shared/output.js";

export function versionCommand(): Command {
  return new Command("version")
    .description("Print the version, build SHA, build date, tier and runtime platform")
    .addOption(new Option("--output <format>", "output format").choices(OUTPUT_FORMATS).default("text"))
    .action((opts: { output: OutputFormat }) => {
      const info = buildInfo();
      if (opts.output !== "text") {
        printValue(opts.output, info);
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

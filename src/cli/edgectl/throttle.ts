import { Command, InvalidArgumentError, Option } from "commander";
import { formatBytes, parseByteSize, parseRate, readThrottleConfig, throttleState, writeThrottleConfig, type ThrottleState } from "../../agent/throttle.js";
import { OUTPUT_FORMATS, printValue, runCommand, type OutputFormat } from "../shared/output.js";
import type { EdgeOptions } from "./options.js";

const parsed = (fn: (v: string) => number) => (value: string) => {
  try {
    return fn(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
};

/** One line: "rate 64KiB/s, daily quota 500MiB (used 1.2MiB in the last 24h)". */
export function describeThrottle(t: ThrottleState): string {
  const rate = t.rate_bytes_per_second > 0 ? `rate ${formatBytes(t.rate_bytes_per_second)}/s` : "rate unlimited";
  const quota =
    t.daily_quota_bytes > 0
      ? `daily quota ${formatBytes(t.daily_quota_bytes)} (used ${formatBytes(t.used_last_24h_bytes)} in the last 24h${t.quota_resumes_at ? `; exhausted until ${t.quota_resumes_at}` : ""})`
      : "no daily quota";
  return `${rate}, ${quota}`;
}

export function throttleCommand(): Command {
  const get = new Command("get")
    .description("Show the throttle of event shipping and what the daily quota has used.")
    .addOption(new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS).default("text"))
    .action((opts: { output: OutputFormat }, cmd: Command) =>
      runCommand("edgectl", async () => {
        const t = throttleState((cmd.optsWithGlobals() as EdgeOptions).stateDir);
        if (opts.output !== "text") printValue(opts.output, t);
        else process.stdout.write(describeThrottle(t) + "\n");
      }),
    );
  const set = new Command("set")
    .description(
      "Limit event shipping: --rate in bytes per second (a token bucket with one second of burst) and " +
        "--daily-quota over a rolling 24 hours; 0 or off removes a limit. Bytes are the events' JSON. " +
        "Kept in the state dir; a running `edgectl run` applies it within a second, without a restart.",
    )
    .option("--rate <size/s>", "e.g. 64KiB/s, 1MB/s, off", parsed(parseRate))
    .option("--daily-quota <size>", "e.g. 500MiB, off", parsed((v) => parseByteSize(v, "--daily-quota")))
    .action((opts: { rate?: number; dailyQuota?: number }, cmd: Command) =>
      runCommand("edgectl", async () => {
        if (opts.rate === undefined && opts.dailyQuota === undefined) throw new Error("throttle set: give --rate, --daily-quota or both");
        const dir = (cmd.optsWithGlobals() as EdgeOptions).stateDir;
        const config = readThrottleConfig(dir);
        if (opts.rate !== undefined) config.rate_bytes_per_second = opts.rate;
        if (opts.dailyQuota !== undefined) config.daily_quota_bytes = opts.dailyQuota;
        writeThrottleConfig(dir, config);
        process.stdout.write(describeThrottle(throttleState(dir)) + "\n");
      }),
    );
  return new Command("throttle").description("The agent-side limit on shipping events (rate and daily quota).").addCommand(get).addCommand(set);
}

/**
 * Runs a serving benchmark's points: every configuration (server variant x policy) at every
 * concurrency level, `repeats` passes each, on the same prompts. With --spawn each configuration
 * gets its own `specd serve`; with --url the policy goes with each request.
 *
 * Order, against machine noise: with one pass and spawned servers, a configuration's server
 * starts, runs every level and stops before the next starts (one server up at a time). Otherwise
 * every server stays up and the passes interleave: round by round, level by level, configuration
 * by configuration, so a slow spell hits them all alike.
 */
import { SingleBar } from 'cli-progress';
import { type BenchConfig, configLabel } from './configs.js';
import { type ConfigResult, type RawRun, runOnce, summarizeConfig, type Target, warmUp } from './run-config.js';
import { type ServerProcess, shellJoin, startServer } from './server-process.js';
import { benchAgent, requestJson } from './stream-request.js';
import type { RequestSettings, WorkItem } from './workload.js';

export interface SweepOptions {
  /** A running server (--url), or undefined with --spawn. */
  url?: string;
  /** Server variants with --spawn (each one `specd serve` flag list; [] = its defaults); ignored with --url. */
  variants: string[][];
  /** The --compare entries; [null] runs each server's own policy. */
  configs: (BenchConfig | null)[];
  /** Concurrency levels in the order given; [null] is one run with no cap. */
  levels: (number | null)[];
  repeats: number;
  /** Requests per second (Poisson arrivals); Infinity: all at once. */
  requestRate: number;
  temperature: number;
  seed: number;
  apiKey?: string;
  /** The request's model; default: the one /v1/models lists. */
  model?: string;
  extraBody?: Record<string, unknown>;
}

/** One configuration: where its requests go and what they carry, and its passes per level. */
interface Slot {
  config: BenchConfig | null;
  /** The variant's flags (--spawn), else null. */
  variant: string[] | null;
  /** All `specd serve` flags (--spawn), else undefined. */
  serverArgs?: string[];
  server?: ServerProcess;
  target?: Target;
  settings?: RequestSettings;
  policy: string;
  label: string;
  /** runs[level index]: the passes at that level. */
  runs: RawRun[][];
}

/** The served model's name, which also checks that the server answers and takes the key. */
export async function servedModel(target: Target): Promise<string> {
  const res = await requestJson(new URL('/v1/models', target.url), target.agent, { apiKey: target.apiKey }).catch((err: Error) => {
    throw new Error(`cannot reach ${target.url}: ${err.message}`);
  });
  if (res.status !== 200) throw new Error(`GET ${target.url}/v1/models: HTTP ${res.status}${res.status === 401 ? ' (check --api-key)' : ''}`);
  const id = (JSON.parse(res.body) as { data?: { id?: string }[] }).data?.[0]?.id;
  if (!id) throw new Error(`GET ${target.url}/v1/models lists no model`);
  return id;
}

/** Start the slot's server (--spawn) or point it at --url, find the model and warm it up. */
async function open(slot: Slot, opts: SweepOptions, items: readonly WorkItem[]): Promise<void> {
  let url = opts.url!;
  if (slot.serverArgs) {
    process.stderr.write(`starting specd serve ${shellJoin(slot.serverArgs)}\n`);
    slot.server = await startServer(slot.serverArgs);
    url = slot.server.url;
    slot.policy = slot.config?.label ?? slot.server.policy ?? 'server';
    slot.label = configLabel(slot.policy, slot.variant, opts.variants.length > 1);
  }
  const target: Target = { url, agent: benchAgent(new URL(url)), apiKey: opts.apiKey };
  slot.target = target;
  const model = opts.model ?? (await servedModel(target));
  slot.settings = { model, temperature: opts.temperature, seed: opts.seed, speculative: slot.serverArgs ? undefined : slot.config?.speculative, extraBody: opts.extraBody };
  await warmUp(target, items, slot.settings, slot.label);
}

async function close(slot: Slot): Promise<void> {
  slot.target?.agent.destroy();
  slot.target = undefined;
  await slot.server?.stop();
  slot.server = undefined;
}

/**
 * Give a pass connections of its own. Between an interleaved configuration's passes its pooled
 * keep-alive sockets sit idle while the others run, and one the server closes for idleness just
 * as a request goes out fails with "socket hang up"; a fresh pool also starts every pass alike.
 */
function freshConnections(target: Target): void {
  target.agent.destroy();
  target.agent = benchAgent(new URL(target.url));
}

const levelText = (c: number | null) => (c === null ? 'no concurrency cap' : `concurrency ${c}`);

/**
 * Run every point and summarise each; the results come level by level (in the order given),
 * each level's configurations variant by variant, policy by policy. Speedups and variant ratios
 * are left for the report (applySpeedups, applyVariantRatios).
 * @throws Error when a server cannot start, its warm-up request fails, or it exits during a pass
 */
export async function runSweep(opts: SweepOptions, items: readonly WorkItem[]): Promise<ConfigResult[]> {
  const spawn = opts.url === undefined;
  const variants: (string[] | null)[] = spawn ? opts.variants : [null];
  const key = opts.apiKey && spawn ? ['--api-key', opts.apiKey] : [];
  const slots: Slot[] = variants.flatMap((variant) =>
    opts.configs.map((config): Slot => {
      const policy = config?.label ?? 'server';
      return {
        config,
        variant,
        serverArgs: variant ? [...variant, ...key, ...(config?.serverFlags ?? [])] : undefined,
        policy,
        label: configLabel(policy, variant, variants.length > 1),
        runs: opts.levels.map(() => []),
      };
    }),
  );
  // Interleave unless that would keep several spawned servers up for a single pass each.
  const interleave = opts.repeats > 1 || !spawn;
  const schedule: { slot: Slot; level: number; round: number }[] = [];
  if (interleave) {
    for (let round = 1; round <= opts.repeats; round++) for (let level = 0; level < opts.levels.length; level++) for (const slot of slots) schedule.push({ slot, level, round });
  } else {
    for (const slot of slots) for (let level = 0; level < opts.levels.length; level++) schedule.push({ slot, level, round: 1 });
  }
  const last = new Map(schedule.map((p, i) => [p.slot, i]));
  try {
    for (const [i, { slot, level, round }] of schedule.entries()) {
      if (!slot.target) await open(slot, opts, items);
      else freshConnections(slot.target);
      const concurrency = opts.levels[level]!;
      const name = `[${i + 1}/${schedule.length}] ${slot.label}, ${levelText(concurrency)}${opts.repeats > 1 ? `, pass ${round}/${opts.repeats}` : ''}`;
      // A bar on a terminal; elsewhere (a log file, a pipe) one line when the point ends.
      const bar = process.stderr.isTTY ? new SingleBar({ format: `${name} {bar} {value}/{total} requests | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true }) : null;
      bar?.start(items.length, 0);
      let run: RawRun;
      try {
        run = await runOnce(slot.target!, items, slot.settings!, { requestRate: opts.requestRate, concurrency: concurrency ?? Infinity, seed: opts.seed, onProgress: (done) => bar?.update(done) });
      } finally {
        bar?.stop();
      }
      slot.runs[level]!.push(run);
      if (!bar) process.stderr.write(`${name}: ${run.responses.filter((r) => r.ok).length}/${items.length} requests succeeded in ${run.durationS.toFixed(1)} s\n`);
      const code = slot.server?.exitCode();
      if (code !== undefined && code !== null) throw new Error(`specd serve ${shellJoin(slot.serverArgs!)} exited (code ${code}) during the benchmark: ${slot.server!.stderrTail(3).replace(/\n/g, ' | ')}`);
      if (last.get(slot) === i) await close(slot);
    }
  } finally {
    for (const slot of slots) await close(slot);
  }
  return opts.levels.flatMap((concurrency, level) =>
    slots.map((slot) =>
      summarizeConfig(
        { label: slot.label, policy: slot.policy, variant: slot.variant, concurrency, speculative: slot.serverArgs ? null : (slot.config?.speculative ?? null), server_args: slot.serverArgs ?? null },
        items,
        slot.runs[level]!,
      ),
    ),
  );
}

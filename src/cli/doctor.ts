/**
 * `specd doctor`: which execution providers load on this host. Each device gets a one-node
 * model (built with the project's graph builder) that must load and run; the report says
 * what failed and how to fix it.
 */
import { Command } from 'commander';
import * as ort from 'onnxruntime-node';
import { DEVICES, type Device, executionProviders, providerFailure } from '../engine/device.js';
import { GraphBuilder } from '../onnx/graph-builder.js';
import { intIn } from './options.js';

export interface ProviderCheck {
  device: Device;
  ok: boolean;
  /** Milliseconds to create the session and run it once. */
  ms?: number;
  error?: string;
}

/** x + x on a [4] float tensor: enough to prove the provider loads and computes. */
function probeModel(): Uint8Array {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [4]);
  g.output(g.op('Add', [x, x]), 'y', 'float32', [4]);
  return g.toBytes();
}

export async function checkProvider(device: Device, deviceId = 0): Promise<ProviderCheck> {
  const t0 = performance.now();
  try {
    const session = await ort.InferenceSession.create(probeModel(), { executionProviders: executionProviders(device, deviceId) });
    const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [4]) });
    const y = Array.from(out.y!.data as Float32Array);
    await session.release();
    if (y.join(',') !== '2,4,6,8') return { device, ok: false, error: `wrong result ${y.join(',')}` };
    return { device, ok: true, ms: performance.now() - t0 };
  } catch (err) {
    return { device, ok: false, error: providerFailure(device, (err as Error).message).split('\n')[0] };
  }
}

export function doctorCommand(): Command {
  return new Command('doctor')
    .description('list the execution providers that load on this host')
    .option('--device-id <n>', 'GPU index to probe', intIn(0, 64), 0)
    .option('--json', 'print the report as JSON')
    .action(async (flags: { deviceId: number; json?: boolean }) => {
      const checks: ProviderCheck[] = [];
      for (const device of DEVICES) checks.push(await checkProvider(device, flags.deviceId));
      const report = { onnxruntime: ort.env.versions, node: process.version, platform: `${process.platform}-${process.arch}`, providers: checks };
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        return;
      }
      process.stdout.write(`onnxruntime-node ${ort.env.versions.node}, node ${process.version}, ${report.platform}\n`);
      for (const c of checks) {
        process.stdout.write(`  ${c.device.padEnd(7)} ${c.ok ? `ok (${c.ms!.toFixed(0)} ms)` : `unavailable: ${c.error}`}\n`);
      }
    });
}

/**
 * What a newcomer meets before any model runs: `specd serve` on a port another process holds
 * fails in one line and exit 1 before loading the models, and `specd doctor` on a host without a
 * Vulkan driver says to install one instead of printing ONNX Runtime's assertion.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { test } from 'node:test';
import { providerFailure, VULKAN_INSTALL_HINT } from '../../src/engine/device.js';
import { SPECD_BIN } from '../support/serve-process.js';

/** The message onnxruntime-node 1.30 throws when Dawn finds no adapter (captured from `specd doctor` with no Vulkan driver). */
const ORT_NO_ADAPTER =
  '/onnxruntime_src/onnxruntime/core/providers/webgpu/webgpu_context.cc:136 onnxruntime::webgpu::WebGpuContext::Initialize(const onnxruntime::webgpu::WebGpuContextConfig&)::<lambda()> adapter_result.status == wgpu::RequestAdapterStatus::Success was false. Failed to get a WebGPU adapter: No supported adapters';

test('specd serve on a port in use: one line naming the port, exit 1, before the models load', async () => {
  const holder = createServer();
  holder.listen({ host: '127.0.0.1', port: 0 });
  await once(holder, 'listening');
  const { port } = holder.address() as AddressInfo;
  try {
    const child = spawn(process.execPath, [SPECD_BIN, 'serve', '--host', '127.0.0.1', '--port', String(port), '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const [code] = (await once(child, 'exit')) as [number | null];
    clearTimeout(timer);
    assert.equal(code, 1, stderr);
    assert.equal(stderr, `specd: error: --port ${port}: 127.0.0.1:${port} is already in use by another process; stop it or choose another --port\n`);
    assert.equal(stdout, '');
  } finally {
    holder.close();
  }
});

test("ONNX Runtime's no-adapter assertion becomes the fix, other failures stay as they are", () => {
  assert.equal(providerFailure('webgpu', ORT_NO_ADAPTER), `--device webgpu: no WebGPU adapter (No supported adapters); ${VULKAN_INSTALL_HINT}`);
  assert.equal(providerFailure('webgpu', 'out of memory\nat line 2'), 'out of memory\nat line 2');
  assert.equal(providerFailure('cpu', ORT_NO_ADAPTER), ORT_NO_ADAPTER, 'only the WebGPU provider reads the message');
});

test('specd doctor without a Vulkan driver says to install one', () => {
  // The Vulkan loader reads its drivers from these files only: none exists, so there is no adapter.
  const env = { ...process.env, VK_DRIVER_FILES: '/nonexistent/vulkan-icd.json', VK_ICD_FILENAMES: '/nonexistent/vulkan-icd.json' };
  const run = spawnSync(process.execPath, [SPECD_BIN, 'doctor'], { encoding: 'utf8', env, timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  const line = run.stdout.split('\n').find((l) => l.trimStart().startsWith('webgpu'));
  assert.ok(line, run.stdout);
  assert.match(line, /unavailable: --device webgpu: no WebGPU adapter \(.+\); install a Vulkan driver/);
  assert.doesNotMatch(run.stdout, /webgpu_context\.cc|RequestAdapterStatus/);
  const json = spawnSync(process.execPath, [SPECD_BIN, 'doctor', '--json'], { encoding: 'utf8', env, timeout: 120_000 });
  const report = JSON.parse(json.stdout) as { providers: { device: string; ok: boolean; error?: string }[] };
  assert.match(report.providers.find((p) => p.device === 'webgpu')!.error!, /install a Vulkan driver/);
});

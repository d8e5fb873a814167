/**
 * Execution providers: which device a session runs on.
 *
 * The npm package bundles the CPU and WebGPU providers; the CUDA provider's libraries are
 * downloaded only by an explicit install step, so asking for `cuda` without them is an error
 * that says how to install them. There is never a silent fallback to another device.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type * as ort from 'onnxruntime-node';

export type Device = 'cpu' | 'cuda' | 'webgpu';
export const DEVICES: readonly Device[] = ['cpu', 'cuda', 'webgpu'];

export class DeviceError extends Error {
  override name = 'DeviceError';
}

export const CUDA_INSTALL_HINT =
  'install it on a host with network access, CUDA 12 and cuDNN 9: npm run install-cuda';

export const VULKAN_INSTALL_HINT =
  "install a Vulkan driver: the GPU vendor's, or Mesa's software one, lavapipe (Debian and Ubuntu: apt-get install mesa-vulkan-drivers)";

/**
 * What ONNX Runtime's WebGPU provider throws when Dawn finds no adapter: an assertion of
 * onnxruntime/core/providers/webgpu/webgpu_context.cc ending in "Failed to get a WebGPU adapter:
 * <Dawn's reason>" (onnxruntime-node 1.30).
 */
const NO_WEBGPU_ADAPTER = /Failed to get a WebGPU adapter:?\s*([^\n]*)/;

/**
 * A provider's failure to start, said for a user: ONNX Runtime's "no WebGPU adapter" assertion
 * becomes one sentence with the fix ({@link VULKAN_INSTALL_HINT}); any other message is returned
 * as it is.
 * @param device the device whose session failed to start
 * @param message the error's message
 */
export function providerFailure(device: Device, message: string): string {
  const adapter = device === 'webgpu' ? NO_WEBGPU_ADAPTER.exec(message) : null;
  if (adapter) return `--device webgpu: no WebGPU adapter${adapter[1] ? ` (${adapter[1].trim().replace(/\.$/, '')})` : ''}; ${VULKAN_INSTALL_HINT}`;
  return message;
}

/** Folder holding onnxruntime-node's native libraries for this platform. */
export function ortBinaryDir(): string {
  const require = createRequire(import.meta.url);
  const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  return join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
}

export function cudaProviderInstalled(): boolean {
  return existsSync(join(ortBinaryDir(), 'libonnxruntime_providers_cuda.so'));
}

export function parseDevice(text: string): Device {
  if ((DEVICES as readonly string[]).includes(text)) return text as Device;
  throw new DeviceError(`unknown device "${text}"; expected one of ${DEVICES.join(', ')}`);
}

/** The session's execution provider list for a device; throws DeviceError if it cannot load here. */
export function executionProviders(device: Device, deviceId = 0): ort.InferenceSession.ExecutionProviderConfig[] {
  switch (device) {
    case 'cpu':
      return ['cpu'];
    case 'cuda':
      if (!cudaProviderInstalled()) {
        throw new DeviceError(`--device cuda: the CUDA execution provider is not installed (no libonnxruntime_providers_cuda.so in ${ortBinaryDir()}); ${CUDA_INSTALL_HINT}`);
      }
      return [{ name: 'cuda', deviceId }];
    case 'webgpu':
      // The WebGPU provider takes no device index (it rejects a `deviceId` option): it uses the default adapter.
      if (deviceId !== 0) throw new DeviceError('--device webgpu uses the default GPU adapter; --device-id is not supported for it');
      return ['webgpu'];
  }
}

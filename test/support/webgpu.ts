/**
 * Whether the WebGPU execution provider can start here: it needs a Vulkan driver (a GPU's, or
 * Mesa's software rasterizer lavapipe, which CI installs). Suites that need it are skipped with
 * the reason where there is none, unless SPECD_REQUIRE_WEBGPU is set (CI), where that is a failure.
 */
import * as ort from 'onnxruntime-node';
import { providerFailure } from '../../src/engine/device.js';
import { GraphBuilder } from '../../src/onnx/graph-builder.js';

async function probe(): Promise<string | undefined> {
  try {
    const g = new GraphBuilder({ opset: 17 });
    g.output(g.op('Add', [g.input('x', 'float32', [2]), g.constant('float32', [1, 2])]), 'y', 'float32', [2]);
    const session = await ort.InferenceSession.create(g.toBytes(), { executionProviders: ['webgpu'] });
    const out = await session.run({ x: new ort.Tensor('float32', Float32Array.of(1, 1), [2]) });
    await session.release();
    const y = out.y!.data as Float32Array;
    return y[0] === 2 && y[1] === 3 ? undefined : `WebGPU computed ${Array.from(y).join(', ')} for 1 + [1, 2]`;
  } catch (err) {
    return providerFailure('webgpu', (err as Error).message).split('\n')[0];
  }
}

const reason = await probe();
if (reason !== undefined && process.env.SPECD_REQUIRE_WEBGPU) {
  throw new Error(`SPECD_REQUIRE_WEBGPU is set but the WebGPU execution provider cannot start: ${reason}`);
}

/** `skip` option for suites that run on the WebGPU execution provider. */
export const webgpuSkip: string | false = reason === undefined ? false : `WebGPU cannot start here: ${reason}`;

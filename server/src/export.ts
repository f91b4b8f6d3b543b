// Export to the TensorFlow.js LayersModel format (model.json + weights.bin), loadable with
// tf.loadLayersModel in a page or in Node. Built from the same spec as training: PyTorch-style
// padding becomes a ZeroPadding2D before a 'valid' conv; dropout is inert at inference.
// Input: [n, input, input, 1] floats in [0, 1], already resized (see Net.inputs).
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { paramLayout, type ModelSpec } from '@tabtrain/shared';
import { writeFileAtomic } from './files';
import { makeDirs } from './output-paths';

// PROD silences tfjs's "install tfjs-node to speed things up" banner, which is for training in Node.
tf.env().set('PROD', true);

export function buildLayersModel(spec: ModelSpec): tf.Sequential {
  const model = tf.sequential({ name: spec.name.replace(/[^A-Za-z0-9_]/g, '_') });
  let first = true;
  const input = () => (first ? ((first = false), { inputShape: [spec.input, spec.input, 1] }) : {});
  spec.layers.forEach((l, i) => {
    switch (l.kind) {
      case 'conv':
        if (l.pad > 0) model.add(tf.layers.zeroPadding2d({ padding: l.pad, ...input() }));
        model.add(tf.layers.conv2d({ filters: l.filters, kernelSize: l.kernel, strides: l.stride, padding: 'valid', activation: 'relu', name: `layer${i}_conv`, ...input() }));
        break;
      case 'pool':
        model.add(tf.layers.maxPooling2d({ poolSize: l.size, strides: l.stride, padding: 'valid', ...input() }));
        break;
      case 'flatten':
        model.add(tf.layers.flatten());
        break;
      case 'dense':
        model.add(tf.layers.dense({ units: l.units, activation: l.relu ? 'relu' : 'linear', name: `layer${i}_dense` }));
        break;
      case 'dropout':
        model.add(tf.layers.dropout({ rate: l.rate }));
        break;
    }
  });
  return model;
}

/** Sets the flat weights (our parameter order is the model's weight order: kernel, bias per layer). */
export function setFlatWeights(model: tf.LayersModel, spec: ModelSpec, flat: Float32Array): void {
  const { params } = paramLayout(spec);
  const tensors = params.map((p) => tf.tensor(flat.subarray(p.offset, p.offset + p.size), p.shape));
  model.setWeights(tensors);
  tf.dispose(tensors);
}

export async function exportLayersModel(spec: ModelSpec, flat: Float32Array, dir: string): Promise<void> {
  const model = buildLayersModel(spec);
  setFlatWeights(model, spec, flat);
  makeDirs(dir);
  await model.save(tf.io.withSaveHandler(async (artifacts) => {
    const data = artifacts.weightData!;
    const bytes = new Uint8Array(Array.isArray(data) ? tf.io.concatenateArrayBuffers(data) : data);
    writeFileAtomic(join(dir, 'weights.bin'), bytes);
    const json = {
      format: 'layers-model', generatedBy: `tabtrain (${spec.name})`, convertedBy: null,
      modelTopology: artifacts.modelTopology,
      weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }],
    };
    writeFileAtomic(join(dir, 'model.json'), JSON.stringify(json));
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON', weightDataBytes: bytes.byteLength } };
  }));
  model.dispose();
}

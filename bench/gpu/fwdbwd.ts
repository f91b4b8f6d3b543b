// One forward + backward of a batch as Net.gradient runs it, the gradients left on the device:
// the step's compute alone (worker-bench's 'noread' mode, layer-bench's step split).
import * as tf from '@tensorflow/tfjs';
import { dropoutLayers, dropoutMask } from '@tabtrain/shared';
import type { Net } from '@tabtrain/shared/net';

/** Returns the batch's loss sum once every kernel of the step has run. */
export async function forwardBackward(net: Net, images: Uint8Array, labels: Uint8Array, batch: number, step: number): Promise<number> {
  const masks = dropoutLayers(net.spec).map((l) => tf.tensor2d(dropoutMask(1, step, l.layer, 0, batch, l.units, l.rate), [batch, l.units]));
  const x = net.inputs(images, batch);
  const y = tf.tensor1d(Int32Array.from(labels.subarray(0, batch)), 'int32');
  const { value, grads } = tf.variableGrads(() => {
    const logits = net.forward(x, masks);
    return tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(y, 10)))) as tf.Scalar;
  }, net.vars);
  tf.dispose([x, y, ...masks]);
  // The loss was enqueued before the gradients, so read a scalar that depends on the LAST
  // gradient computed (the first layer's kernel) as well: every kernel of the step has then run.
  const first = grads[net.vars[0].name];
  const probe = tf.tidy(() => tf.add(value, tf.mul(tf.sum(first), 0)));
  const loss = (await probe.data())[0];
  tf.dispose([value, probe, ...Object.values(grads)]);
  return loss;
}

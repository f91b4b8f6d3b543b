// The training step the CPU benches time (worker-speed.ts, worker-profile.ts): Net.gradient, as a
// run calls it, on real Fashion-MNIST, from seeded initial weights.
import { getModel, initParams } from '@tabtrain/shared';
import { Net } from '@tabtrain/shared/net';
import { loadFashionMnist } from '../server/src/data';

export interface BenchNet { net: Net; step(s: number): Promise<unknown> }

let train: ReturnType<typeof loadFashionMnist>['train'] | null = null;

/** A model with run seed 1's weights; step(s) computes the gradient of batch s (its own examples, its own dropout). */
export function benchNet(name: string, batch: number): BenchNet {
  train ??= loadFashionMnist().train;
  const data = train;
  const net = new Net(getModel(name));
  net.setWeights(initParams(net.spec, 1));
  const grad = new Float32Array(net.total);
  return {
    net,
    step: (s) => {
      const o = (s * batch) % (data.labels.length - batch);
      return net.gradient(data.images.subarray(o * 784, (o + batch) * 784), data.labels.subarray(o, o + batch), batch, 1, s, 0, grad);
    },
  };
}

#!/usr/bin/python3
"""PyTorch's side of issue 23's comparison: the same models (shared/src/models.ts), one thread.

  /usr/bin/python3 bench/torch-step.py speed   [--batch 16] [--steps 5] MODEL...   -> one JSON line per model
  /usr/bin/python3 bench/torch-step.py profile [--batch 16] [--steps 5] MODEL...   -> torch.profiler's table, JSON

A step is forward + backward + SGD on real Fashion-MNIST images (resized bilinearly to the
model's input, as the worker does), dropout on, as d2l trains. Debian's python3-torch (1.13).
Called by bench/cpu-compare.ts, which interleaves it with the tfjs wasm worker.
"""
import argparse
import gzip
import json
import time

import torch
from torch import nn
import torch.nn.functional as F

torch.set_num_threads(1)
torch.manual_seed(1)

C = lambda n, div: max(1, round(n / div))


def alexnet(div, hidden, side):
    convs = [(C(96, div), 11, 4, 1), 'pool', (C(256, div), 5, 1, 2), 'pool',
             (C(384, div), 3, 1, 1), (C(384, div), 3, 1, 1), (C(256, div), 3, 1, 1), 'pool']
    return build(convs, hidden, side, pool=(3, 2))


def vgg11(ratio, hidden, side):
    convs = []
    for n, ch in ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)):
        convs += [(max(1, ch // ratio), 3, 1, 1)] * n + ['pool']
    return build(convs, hidden, side, pool=(2, 2))


def build(convs, hidden, side, pool):
    layers, ch = [], 1
    for c in convs:
        if c == 'pool':
            layers.append(nn.MaxPool2d(*pool))
        else:
            out, k, s, p = c
            layers += [nn.Conv2d(ch, out, k, s, p), nn.ReLU()]
            ch = out
    body = nn.Sequential(*layers)
    flat = body(torch.zeros(1, 1, side, side)).numel()
    return nn.Sequential(body, nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, 10))


MODELS = {
    'alexnet': lambda: (alexnet(1, 4096, 224), 224),
    'vgg11': lambda: (vgg11(4, 4096, 224), 224),
    'alexnet-small': lambda: (alexnet(4, 256, 65), 65),
    'vgg11-small': lambda: (vgg11(16, 256, 32), 32),
    'alexnet-tiny': lambda: (alexnet(16, 32, 65), 65),
    'vgg11-tiny': lambda: (vgg11(32, 32, 32), 32),
}


def fashion(n):
    with gzip.open('/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz') as f:
        images = torch.frombuffer(bytearray(f.read()[16:16 + n * 784]), dtype=torch.uint8)
    with gzip.open('/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz') as f:
        labels = torch.frombuffer(bytearray(f.read()[8:8 + n]), dtype=torch.uint8).long()
    return images.view(n, 1, 28, 28).float() / 255, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('mode', choices=['speed', 'profile'])
    ap.add_argument('models', nargs='+')
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--steps', type=int, default=5)
    a = ap.parse_args()
    images, labels = fashion(a.batch * (a.steps + 1))
    for name in a.models:
        net, side = MODELS[name]()
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        batches = [(F.interpolate(images[i * a.batch:(i + 1) * a.batch], size=(side, side), mode='bilinear', align_corners=False),
                    labels[i * a.batch:(i + 1) * a.batch]) for i in range(a.steps + 1)]

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y, reduction='sum')
            loss.backward()
            opt.step()

        step(*batches[0])  # burn-in
        if a.mode == 'speed':
            times, cpu = [], []
            for x, y in batches[1:]:
                t0, c0 = time.perf_counter(), time.process_time()
                step(x, y)
                times.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
            med = sorted(times)[len(times) // 2]
            cmed = sorted(cpu)[len(cpu) // 2]
            print(json.dumps({'model': name, 'framework': f'pytorch {torch.__version__}', 'threads': torch.get_num_threads(),
                              'batch': a.batch, 'steps': a.steps, 'medianStepMs': med, 'examplesPerSec': 1000 * a.batch / med,
                              'medianCpuMs': cmed, 'examplesPerCpuSec': 1000 * a.batch / cmed}))
        else:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                t0, c0 = time.perf_counter(), time.process_time()
                for x, y in batches[1:]:
                    step(x, y)
                wall = (time.perf_counter() - t0) * 1000 / a.steps
                cpu = (time.process_time() - c0) * 1000 / a.steps
            ops = [{'op': e.key, 'selfMsPerStep': e.self_cpu_time_total / 1000 / a.steps, 'callsPerStep': e.count / a.steps}
                   for e in prof.key_averages() if e.self_cpu_time_total > 0]
            ops.sort(key=lambda o: -o['selfMsPerStep'])
            print(json.dumps({'model': name, 'framework': f'pytorch {torch.__version__}', 'batch': a.batch, 'steps': a.steps,
                              'stepMs': wall, 'cpuMsPerStep': cpu, 'ops': ops}))


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""(a) of the GPU comparison: PyTorch training speed of d2l's AlexNet and VGG-11 (channels / 4)
on Fashion-MNIST at 224x224, batch 128, fp32, on the same GPU as tabtrain's WebGPU worker.

The nets are d2l's, layer for layer (d2l.ai 8.1 AlexNet, 8.2 VGG with small_conv_arch), with
d2l.train_ch6's init (Xavier-uniform conv/linear weights), mean cross-entropy and plain SGD.
Examples/s counts only forward, backward and the optimizer step, as d2l's does: the batch is
already on the GPU, resized to 224 (bilinear) once before timing.

Two settings, because PyTorch's default is not strict fp32 on Ampere/Hopper:
  fp32     cudnn.allow_tf32 = False, matmul.allow_tf32 = False (true fp32, like WebGPU's shaders),
           cudnn.benchmark = True (best kernels)
  default  PyTorch's defaults as d2l runs them: cuDNN convolutions may use TF32 tensor cores,
           cudnn.benchmark = False
and two timings each: 'train' (forward + backward + SGD step) and 'fwdbwd' (forward + backward,
what a tabtrain worker computes).

  python3 bench/gpu/torch_bench.py [--data DIR] [--batch 128] [--steps 20] [--warmup 5] [--json FILE]
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def alexnet():
    # d2l 8.1 (PyTorch), Fashion-MNIST: 1 input channel, 10 classes.
    return nn.Sequential(
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(6400, 4096), nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 10))


def vgg_block(num_convs, in_channels, out_channels):
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        layers.append(nn.ReLU())
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg(conv_arch):
    # d2l 8.2 (PyTorch).
    conv_blks = []
    in_channels = 1
    for (num_convs, out_channels) in conv_arch:
        conv_blks.append(vgg_block(num_convs, in_channels, out_channels))
        in_channels = out_channels
    return nn.Sequential(
        *conv_blks, nn.Flatten(),
        nn.Linear(out_channels * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 10))


CONV_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
RATIO = 4
SMALL_CONV_ARCH = [(pair[0], pair[1] // RATIO) for pair in CONV_ARCH]

MODELS = {
    # name: (builder, d2l lr, parameter count the DESIGN's table gives)
    'alexnet': (alexnet, 0.01, 46_764_746),
    'vgg11': (lambda: vgg(SMALL_CONV_ARCH), 0.05, 43_093_322),
}


def init_weights(m):
    # d2l.train_ch6
    if type(m) == nn.Linear or type(m) == nn.Conv2d:
        nn.init.xavier_uniform_(m.weight)


def load_images(data_dir, n):
    """The first n Fashion-MNIST training images and labels (IDX, .gz or raw)."""
    def read(name):
        for path in (os.path.join(data_dir, name + '.gz'), os.path.join(data_dir, name)):
            if os.path.exists(path):
                with (gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')) as f:
                    return f.read()
        raise FileNotFoundError(f'{name}(.gz) not found in {data_dir}')
    images = np.frombuffer(read('train-images-idx3-ubyte'), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    labels = np.frombuffer(read('train-labels-idx1-ubyte'), dtype=np.uint8, offset=8)[:n]
    return images, labels


def set_mode(mode):
    if mode == 'fp32':
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    else:  # PyTorch's defaults
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = False


def bench(name, mode, what, x, y, steps, warmup, device):
    builder, lr, expected = MODELS[name]
    torch.manual_seed(0)
    net = builder()
    params = sum(p.numel() for p in net.parameters())
    assert params == expected, f'{name}: {params} parameters, d2l has {expected}'
    net.apply(init_weights)
    net.to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        if what == 'train':
            opt.step()
        return loss

    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    seconds = time.perf_counter() - t0
    batch = x.shape[0]
    r = {'model': name, 'mode': mode, 'what': what, 'batch': batch, 'steps': steps, 'params': params,
         'msPerStep': round(1000 * seconds / steps, 3), 'examplesPerSec': round(batch * steps / seconds, 1),
         'loss': round(float(loss), 4)}
    print(f"torch {name:8} {mode:7} {what:6} {r['examplesPerSec']:10.1f} examples/s  ({r['msPerStep']} ms/step, batch {batch}, {steps} steps)", flush=True)
    del net, opt
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', default='/usr/share/datasets/fashion-mnist')
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--models', default='alexnet,vgg11')
    ap.add_argument('--modes', default='fp32,default')
    ap.add_argument('--json')
    ap.add_argument('--device', default='cuda', help='cuda (default); cpu only to check the script itself')
    a = ap.parse_args()
    if a.device == 'cuda' and not torch.cuda.is_available():
        print('torch_bench: no CUDA device; nothing to measure', file=sys.stderr)
        sys.exit(2)
    device = torch.device(a.device)
    images, labels = load_images(a.data, a.batch)
    # d2l: ToTensor (scale to [0, 1]) and Resize(224) (bilinear), done once, outside the timing.
    x = F.interpolate(torch.from_numpy(images.copy()).to(device).float() / 255, size=(224, 224), mode='bilinear', align_corners=False)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    cuda = device.type == 'cuda'
    info = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version() if cuda else None,
            'gpu': torch.cuda.get_device_name(0) if cuda else 'cpu', 'capability': '.'.join(map(str, torch.cuda.get_device_capability(0))) if cuda else None}
    print(f"torch {info['torch']} (CUDA {info['cuda']}, cuDNN {info['cudnn']}) on {info['gpu']} (sm {info['capability']})", flush=True)
    results = []
    for mode in a.modes.split(','):
        set_mode(mode)
        for name in a.models.split(','):
            for what in ('train', 'fwdbwd'):
                results.append(bench(name, mode, what, x, y, a.steps, a.warmup, device))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump({'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), **info, 'results': results}, f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()

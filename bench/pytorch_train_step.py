"""Plain PyTorch eager baseline for `bench_train_step`: the same CIFAR ResNet (option A, He-normal
init, BN, in-place ReLU, global average pooling), one SGD step at a time on synthetic data, written
the way a PyTorch user would write it (torchvision's block style).

  python bench/pytorch_train_step.py --depth 20 --batch 128 --warmup 3 --steps 10 --device cpu --threads 2
      [--channels-last] [--bf16] [--fused] [--compile]

PyTorch's switches: --channels-last (model and input in channels_last), --bf16 (the forward pass
and loss under torch.autocast to bfloat16), --fused (SGD's fused kernel, else its foreach path),
--compile (the model through torch.compile; mode "reduce-overhead", which replays CUDA graphs, on
CUDA; the default mode on the CPU).

prints one line of JSON: {"depth": 20, "images_per_s": ..., "step_ms": ...}
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, residual=True):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if not self.residual:
            return self.relu(out)
        shortcut = x
        if self.stride != 1 or self.extra:
            # option A: subsample and append zero channels
            shortcut = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))
        out += shortcut
        return self.relu(out)


class CifarResNet(nn.Module):
    """Plain (residual=False) or residual, He-normal with n = k*k*c_in (init="fan_in") or
    k*k*c_out ("fan_out"), BN gamma 1 and beta 0, nn.Linear's default fc."""

    def __init__(self, depth, num_classes=10, in_channels=3, residual=True, init="fan_in"):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        layers, cin = [], 16
        for s, width in enumerate([16, 32, 64]):
            for b in range(n):
                layers.append(BasicBlock(cin, width, 2 if s > 0 and b == 0 else 1, residual))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=init, nonlinearity="relu")

    def forward(self, x):
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def timed(step, warmup, steps, dev):
    """Seconds for `steps` calls of `step` after `warmup` untimed ones, the device synchronised."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--fused", action="store_true")
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = CifarResNet(a.depth).to(dev).to(memory_format=fmt).train()
    sgd = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt = torch.optim.SGD(model.parameters(), **sgd, **({"fused": True} if a.fused else {}))
    if a.compile:
        model = torch.compile(model, mode="reduce-overhead" if dev.type == "cuda" else None)
    x = torch.randn(a.batch, 3, 32, 32, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (a.batch,), device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    dt = timed(step, a.warmup, a.steps, dev)
    print(json.dumps({"depth": a.depth, "images_per_s": a.batch * a.steps / dt, "step_ms": 1e3 * dt / a.steps,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()

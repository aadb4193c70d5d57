"""Plain PyTorch baseline for `bench_train_loop`: the CIFAR training loop as a PyTorch user writes
it (akamaster/pytorch_resnet_cifar10, torchvision's references): a Dataset of uint8 HWC images
turned into PIL images, torchvision transforms (RandomCrop(32, padding=4), RandomHorizontalFlip,
ToTensor, Normalize), a shuffling DataLoader, and the SGD step of pytorch_train_step.py.

  python bench/pytorch_train_loop.py --depth 20 --images 10000 --warmup 5 --steps 20 --workers 0

prints one line of JSON: {"depth": 20, "images_per_s": ..., "workers": 0, ...}
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from pytorch_train_step import CifarResNet, timed  # noqa: E402


class ArrayDataset(torch.utils.data.Dataset):
    """Like torchvision.datasets.CIFAR10 once loaded: uint8 N x 32 x 32 x 3 and integer labels."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="forward pass and loss under bfloat16 autocast")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(a.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=a.images)
    mean = images.reshape(-1, 3).mean(0) / 255.0
    std = images.reshape(-1, 3).std(0) / 255.0
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    dev = torch.device(a.device)
    torch.backends.cudnn.benchmark = True  # as akamaster's and torchvision's CIFAR scripts do
    loader = torch.utils.data.DataLoader(
        ArrayDataset(images, labels, transform),
        batch_size=a.batch,
        shuffle=True,
        drop_last=True,
        num_workers=a.workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=a.workers > 0,
    )
    model = CifarResNet(a.depth).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def batches():
        while True:
            yield from loader

    it = batches()

    def step():
        x, y = next(it)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    dt = timed(step, a.warmup, a.steps, dev)
    print(json.dumps({"depth": a.depth, "images_per_s": a.batch * a.steps / dt, "workers": a.workers,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()

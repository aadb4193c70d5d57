"""Plain PyTorch baseline for `bench_loader`: torchvision's ImageFolder and a DataLoader with the
paper's training transforms as a PyTorch user writes them (fb.resnet.torch's, in torchvision
terms): shorter side resized to a random size in [256, 480], random 224 crop, horizontal flip,
ToTensor, AlexNet PCA lighting, mean subtraction.

  python bench/pytorch_loader.py --root DIR --batch 32 --workers 2 --warmup 2 --batches 10

prints one line of JSON: {"images_per_s": ..., "workers": ...}
"""

import argparse
import json
import random
import time

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from torchvision.datasets import ImageFolder

EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


class RandomShorterSide:
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def __call__(self, img):
        return F.resize(img, random.randint(self.lo, self.hi))


class Lighting:
    def __init__(self, std):
        self.std = std

    def __call__(self, x):
        alpha = torch.randn(3) * self.std
        return x + (EIGVEC @ (alpha * EIGVAL)).view(3, 1, 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    transform = T.Compose([
        RandomShorterSide(256, 480), T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), Lighting(0.1),
        T.Normalize([0.485, 0.456, 0.406], [1.0, 1.0, 1.0]),
    ])
    loader = torch.utils.data.DataLoader(ImageFolder(a.root, transform), batch_size=a.batch, shuffle=True,
                                         drop_last=True, num_workers=a.workers, persistent_workers=a.workers > 0)

    def batches():
        while True:
            yield from loader

    it = batches()
    for _ in range(a.warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(a.batches):
        x, y = next(it)
    dt = time.perf_counter() - t0
    print(json.dumps({"images_per_s": a.batch * a.batches / dt, "workers": a.workers, "torch": torch.__version__}))


if __name__ == "__main__":
    main()

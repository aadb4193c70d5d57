"""The plain-PyTorch side of `make crosscheck`: CIFAR-style nets trained on Fashion-MNIST with the
cross-check's recipe, written as a PyTorch user would write it (the model of
pytorch_train_step.py; the per-pixel mean subtracted, then RandomCrop(28, padding=4) with zero fill
and a random horizontal flip, so that a crop keeps each pixel's own mean and the padding is the
mean, as our side (and Caffe's mean file, fb.resnet.torch's normalise-then-crop) has it; a shuffling
loader that drops the last partial batch, as ours does; torch.optim.SGD). Per (net, seed) it writes <out>/<net>/seed<k>/metrics.csv with the columns
`iteration,train_error,test_error`: the training error (%) of the mini-batches since the previous
row (train mode, augmented, before each update) every --log-every iterations, and the test error
(%) at the --eval-at iterations. Finished runs (their metrics.csv) are skipped.

  python bench/pytorch_crosscheck.py --data-dir /usr/share/datasets/fashion-mnist --nets plain20,resnet20 \
      --seeds 0,1 --iterations 200 --log-every 100 --eval-at 100,200 --init fan_in --out runs/crosscheck/pytorch-fan_in
"""

import argparse
import gzip
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from pytorch_train_step import CifarResNet  # noqa: E402


def read_idx(path):
    """An IDX file (gzipped or not) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data_dir, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return read_idx(path)
    sys.exit(f"{data_dir}: no {stem}(.gz)")


def augment(centred, gen):
    """RandomCrop(28, padding=4) with zeros and a random horizontal flip, on mean-subtracted images."""
    n, _, h, w = centred.shape
    padded = F.pad(centred, (4, 4, 4, 4))
    oy = torch.randint(0, 9, (n,), generator=gen)
    ox = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.stack([padded[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(3)
    return out


def batch_images(centred, gen, mean_after_crop):
    """The augmented batch: crops of the centred images, or (--mean-after-crop) of the raw ones with
    the mean subtracted after."""
    if mean_after_crop is None:
        return augment(centred, gen)
    return augment(centred + mean_after_crop, gen) - mean_after_crop


def error(model, x, y, batch=1000):
    model.eval()
    wrong = 0
    with torch.no_grad():
        for s in range(0, len(y), batch):
            wrong += (model(x[s : s + batch]).argmax(1) != y[s : s + batch]).sum().item()
    model.train()
    return 100.0 * wrong / len(y)


def train(net, seed, a, data):
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = CifarResNet(int(net[5:] if net.startswith("plain") else net[6:]), 10, 1, net.startswith("resnet"), a.init)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    rows, order, pos = [], torch.empty(0, dtype=torch.long), 0
    wrong = seen = 0
    for it in range(1, a.iterations + 1):
        if pos >= len(order):
            order, pos = torch.randperm(len(y_train), generator=gen), 0
            order = order[: len(order) // a.batch * a.batch]  # drop_last=True
        idx = order[pos : pos + a.batch]
        pos += a.batch
        x = batch_images(x_train[idx], gen, a.mean_after_crop)
        y = y_train[idx]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        wrong += (logits.argmax(1) != y).sum().item()
        seen += len(y)
        if it % a.log_every == 0:
            test = f"{error(model, x_test, y_test):.4f}" if it in a.eval_at else ""
            rows.append(f"{it},{100.0 * wrong / seen:.4f},{test}")
            wrong = seen = 0
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--nets", required=True)
    p.add_argument("--seeds", required=True)
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-at", default="500,1000")
    p.add_argument("--init", choices=["fan_in", "fan_out"], default="fan_in")
    p.add_argument("--test-images", type=int, default=0, help="the first N test images (0: all)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--mean-after-crop", action="store_true",
                   help="crop the raw image (zero padding = black) and subtract the mean after, as torchvision's "
                   "RandomCrop then Normalize would: a shifted crop gets another position's mean (to measure it)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    a.eval_at = {int(s) for s in a.eval_at.split(",")}
    if a.threads:
        torch.set_num_threads(a.threads)
    to_x = lambda images: torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x_train = to_x(load(a.data_dir, "train-images-idx3-ubyte"))
    mean = x_train.mean(0, keepdim=True)
    x_train = x_train - mean
    a.mean_after_crop = mean if a.mean_after_crop else None
    y_train = torch.from_numpy(load(a.data_dir, "train-labels-idx1-ubyte").astype(np.int64))
    x_test = to_x(load(a.data_dir, "t10k-images-idx3-ubyte")) - mean
    y_test = torch.from_numpy(load(a.data_dir, "t10k-labels-idx1-ubyte").astype(np.int64))
    if a.test_images:
        x_test, y_test = x_test[: a.test_images], y_test[: a.test_images]
    data = (x_train, y_train, x_test, y_test)
    for net in a.nets.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            path = os.path.join(a.out, net, f"seed{seed}", "metrics.csv")
            if os.path.exists(path):
                continue
            rows = train(net, seed, a, data)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                f.write("iteration,train_error,test_error\n" + "\n".join(rows) + "\n")
            os.replace(path + ".tmp", path)
            print(f"pytorch {net} seed{seed} ({a.init}): {rows[-1]}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

"""The plain-PyTorch side of `make crosscheck`: CIFAR-style nets trained on Fashion-MNIST with the
cross-check's recipe, written as a PyTorch user would write it (the model of
pytorch_train_step.py; the per-pixel mean subtracted, then RandomCrop(28, padding=4) with zero fill
and a random horizontal flip, so that a crop keeps each pixel's own mean and the padding is the
mean, as our side (and Caffe's mean file, fb.resnet.torch's normalise-then-crop) has it; a shuffling
loader that drops the last partial batch, as ours does; torch.optim.SGD). Per (net, seed) it writes <out>/<net>/seed<k>/metrics.csv with the columns
`iteration,train_error,test_error`: the training error (%) of the mini-batches since the previous
row (train mode, augmented, before each update) every --log-every iterations, and the test error
(%) at the --eval-at iterations. Finished runs (their metrics.csv) are skipped. --device cuda
trains on the GPU (the draws and the crops stay on the CPU, so they are the same draws).

--swap init|data|init,data with --draws DIR trains with our side's random draws instead of its own
(written by `crosscheck --swap`): DIR/<net>/seed<k>/init.safetensors, our initial weights under our
names, and plan.safetensors, each epoch's order, crop offsets and flips. Everything else is as above.

  python bench/pytorch_crosscheck.py --data-dir /usr/share/datasets/fashion-mnist --nets plain20,resnet20 \
      --seeds 0,1 --iterations 200 --log-every 100 --eval-at 100,200 --init fan_in --out runs/crosscheck/pytorch-fan_in
"""

import argparse
import gzip
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

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


def torch_name(ours, blocks_per_stage):
    """`layer2.0.conv1.weight` (torchvision's names, ours) -> `layers.1.conv1.weight` (the flat
    Sequential of CifarResNet)."""
    m = re.fullmatch(r"layer(\d+)\.(\d+)\.(.*)", ours)
    if not m:
        return ours
    stage, block, rest = int(m[1]), int(m[2]), m[3]
    return f"layers.{(stage - 1) * blocks_per_stage + block}.{rest}"


def load_ours(model, ours, blocks_per_stage):
    """Our variables (our names) into `model`; only BN's num_batches_tracked may be missing."""
    state = {torch_name(k, blocks_per_stage): v for k, v in ours.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)


def draw_augmentation(n, gen):
    """RandomCrop's offsets (0..8 each way) and RandomHorizontalFlip's coin for `n` images."""
    oy = torch.randint(0, 9, (n,), generator=gen)
    ox = torch.randint(0, 9, (n,), generator=gen)
    return oy, ox, torch.rand(n, generator=gen) < 0.5


def augment(centred, oy, ox, flip):
    """RandomCrop(28, padding=4) with zeros and a random horizontal flip, on mean-subtracted images."""
    n, _, h, w = centred.shape
    padded = F.pad(centred, (4, 4, 4, 4))
    out = torch.stack([padded[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(3)
    return out


def batch_images(centred, draw, mean_after_crop):
    """The augmented batch: crops of the centred images, or (--mean-after-crop) of the raw ones with
    the mean subtracted after."""
    if mean_after_crop is None:
        return augment(centred, *draw)
    return augment(centred + mean_after_crop, *draw) - mean_after_crop


def error(model, x, y, device, batch=1000):
    model.eval()
    wrong = 0
    with torch.no_grad():
        for s in range(0, len(y), batch):
            logits = model(x[s : s + batch].to(device))
            wrong += (logits.argmax(1).cpu() != y[s : s + batch]).sum().item()
    model.train()
    return 100.0 * wrong / len(y)


class EpochDraws:
    """Each epoch's order (the last partial batch dropped, as DataLoader's drop_last) and every
    position's crop and flip: drawn here from the seed's generator, or (--swap data) read from our
    side's plan."""

    def __init__(self, seed, n, batch, plan):
        self.gen, self.n, self.batch, self.plan = torch.Generator().manual_seed(seed), n, batch, plan

    def epoch(self, e):
        if self.plan is not None:
            p = self.plan
            return p[f"order.{e}"], (p[f"oy.{e}"], p[f"ox.{e}"], p[f"flip.{e}"].bool())
        order = torch.randperm(self.n, generator=self.gen)
        order = order[: self.n // self.batch * self.batch]
        return order, None


def build(net, seed, a):
    """The model and its optimizer, initialised from `seed`, or (--swap init) with our initial weights."""
    depth = int(net[5:] if net.startswith("plain") else net[6:])
    torch.manual_seed(seed)
    model = CifarResNet(depth, 10, 1, net.startswith("resnet"), a.init)
    if "init" in a.swap:
        load_ours(model, load_file(os.path.join(a.draws, net, f"seed{seed}", "init.safetensors")), (depth - 2) // 6)
    model.to(a.device)
    return model, torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=1e-4)


def train(net, seed, a, data):
    x_train, y_train, x_test, y_test = data
    model, opt = build(net, seed, a)
    plan = load_file(os.path.join(a.draws, net, f"seed{seed}", "plan.safetensors")) if "data" in a.swap else None
    draws = EpochDraws(seed, len(y_train), a.batch, plan)
    rows, order, pos, epoch = [], torch.empty(0, dtype=torch.long), 0, -1
    wrong = seen = 0
    for it in range(1, a.iterations + 1):
        if pos >= len(order):
            epoch += 1
            (order, crops), pos = draws.epoch(epoch), 0
        idx = order[pos : pos + a.batch]
        draw = draw_augmentation(len(idx), draws.gen) if crops is None else [c[pos : pos + a.batch] for c in crops]
        pos += a.batch
        x = batch_images(x_train[idx], draw, a.mean_after_crop).to(a.device)
        y = y_train[idx].to(a.device)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        wrong += (logits.argmax(1) != y).sum().item()
        seen += len(y)
        if it % a.log_every == 0:
            test = f"{error(model, x_test, y_test, a.device):.4f}" if it in a.eval_at else ""
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
    p.add_argument("--device", default="cpu", help="where to train: cpu, cuda or cuda:N")
    p.add_argument("--mean-after-crop", action="store_true",
                   help="crop the raw image (zero padding = black) and subtract the mean after, as torchvision's "
                   "RandomCrop then Normalize would: a shifted crop gets another position's mean (to measure it)")
    p.add_argument("--draws", help="our side's draws (written by crosscheck --swap): DIR/<net>/seed<k>/{init,plan}.safetensors")
    p.add_argument("--swap", default="", help="which of our draws to use instead of PyTorch's: init, data or init,data")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    a.swap = set(filter(None, a.swap.split(",")))
    if a.swap - {"init", "data"} or (a.swap and not a.draws):
        p.error("--swap takes init and/or data, and needs --draws")
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

"""Reference side of tests/lockstep.rs: the PyTorch cross-check's model and optimizer
(bench/pytorch_crosscheck.py) trained in lockstep with ours: the same initial weights, the same
batches, the same number of CPU threads.

  lockstep_reference.py DIR THREADS CASE...

For each CASE (e.g. `resnet8`, `plain8`), reads DIR/<CASE>.safetensors, written by the Rust test:
`init.<name>` (our initial weights and BN statistics, under our names), `x.<k>` and `y.<k>` (the
batch of step k), `test_x`, and `hyper` (lr, momentum, weight decay). Trains
CifarResNet(depth, 10, channels, residual) with torch.optim.SGD over those batches, in train mode,
and writes DIR/<CASE>.torch.safetensors: `loss` (one per step), `final.<name>` (weights and BN
statistics after the last step, under our names) and `test_logits` (eval mode).
"""

import os
import re
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from pytorch_crosscheck import load_ours, torch_name  # noqa: E402
from pytorch_train_step import CifarResNet  # noqa: E402


def run(path, case):
    t = load_file(path + ".safetensors")
    residual, depth = case.startswith("resnet"), int(re.sub(r"\D", "", case))
    n = (depth - 2) // 6
    init = {k[len("init."):]: v for k, v in t.items() if k.startswith("init.")}
    model = CifarResNet(depth, 10, t["x.0"].shape[1], residual)
    load_ours(model, init, n)
    lr, momentum, wd = t["hyper"].tolist()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    model.train()
    losses, k = [], 0
    while f"x.{k}" in t:
        loss = F.cross_entropy(model(t[f"x.{k}"]), t[f"y.{k}"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        k += 1
    model.eval()
    with torch.no_grad():
        logits = model(t["test_x"])
    sd = model.state_dict()
    out = {f"final.{k}": sd[torch_name(k, n)].contiguous() for k in init}
    out["loss"] = torch.tensor(losses, dtype=torch.float64)
    out["test_logits"] = logits.contiguous()
    save_file(out, path + ".torch.safetensors")


def main(out, threads, cases):
    torch.set_num_threads(int(threads))
    for case in cases:
        run(os.path.join(out, case), case)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])

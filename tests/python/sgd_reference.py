"""Reference side of tests/optim.rs: torch.optim.SGD on a few parameters with given gradients.

  sgd_reference.py DIR   writes DIR/<case>.safetensors for each case below: the initial parameters
                         (init.<i>), the gradient of each step (grad.<k>.<i>), the learning rate of each
                         step (lr), and the parameters and momentum buffers after the last step
                         (param.<i>, buf.<i>)
"""

import sys

import torch
from safetensors.torch import save_file

CASES = {
    "paper": dict(momentum=0.9, weight_decay=1e-4, dampening=0.0, nesterov=False),
    "decay": dict(momentum=0.9, weight_decay=5e-4, dampening=0.0, nesterov=False),
    "plain": dict(momentum=0.0, weight_decay=1e-4, dampening=0.0, nesterov=False),
}
# The same cases with torch.optim.SGD(fused=True): its one-kernel update.
CASES.update({f"{k}-fused": dict(v, fused=True) for k, v in list(CASES.items())})
SHAPES = [(16, 3, 3, 3), (16,), (10, 64), (10,)]
LRS = [0.1, 0.1, 0.1, 0.01, 0.01, 0.001]


def main(out):
    for name, h in CASES.items():
        gen = torch.Generator().manual_seed(0)
        init = [torch.randn(s, generator=gen) for s in SHAPES]
        params = [p.clone().requires_grad_() for p in init]
        opt = torch.optim.SGD(params, lr=LRS[0], **h)
        tensors = {f"init.{i}": p for i, p in enumerate(init)}
        for k, lr in enumerate(LRS):
            for g in opt.param_groups:
                g["lr"] = lr
            grads = [torch.randn(s, generator=gen) for s in SHAPES]
            opt.zero_grad()
            loss = sum((p * g).sum() for p, g in zip(params, grads))
            loss.backward()
            opt.step()
            tensors.update({f"grad.{k}.{i}": g for i, g in enumerate(grads)})
        tensors["lr"] = torch.tensor(LRS, dtype=torch.float64)
        tensors.update({f"param.{i}": p.detach().clone() for i, p in enumerate(params)})
        if h["momentum"]:
            tensors.update({f"buf.{i}": opt.state[p]["momentum_buffer"] for i, p in enumerate(params)})
        save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/{name}.safetensors")


if __name__ == "__main__":
    main(sys.argv[1])

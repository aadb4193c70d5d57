"""Reference side of tests/torchvision.rs: torchvision's ResNets, the implementation everyone uses.

  generate DIR   builds resnet18 and resnet50 with a fixed seed and non-trivial BN statistics, writes
                 DIR/<name>.safetensors (weights), DIR/input.safetensors and DIR/<name>_logits.safetensors
  check DIR      loads DIR/ours_<name>.safetensors (weights saved by resnet-repro) into torchvision's
                 <name> with strict=True, and compares its eval logits with DIR/ours_<name>_logits.safetensors
"""

import sys

import torch
import torchvision
from safetensors.torch import load_file, save_file

NAMES = ["resnet18", "resnet50"]


def perturb_bn(model, gen):
    # Fresh BN layers are the identity in eval mode: give them values so that a wrong mapping shows.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5


def generate(out):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 224, 224, generator=gen)
    save_file({"input": x}, f"{out}/input.safetensors")
    for name in NAMES:
        model = getattr(torchvision.models, name)(weights=None)
        perturb_bn(model, gen)
        model.eval()
        with torch.no_grad():
            logits = model(x)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, f"{out}/{name}.safetensors")
        save_file({"logits": logits}, f"{out}/{name}_logits.safetensors")


def check(out):
    x = load_file(f"{out}/input.safetensors")["input"]
    for name in NAMES:
        model = getattr(torchvision.models, name)(weights=None)
        state = load_file(f"{out}/ours_{name}.safetensors")
        model.load_state_dict(state, strict=True)
        model.eval()
        with torch.no_grad():
            logits = model(x)
        ours = load_file(f"{out}/ours_{name}_logits.safetensors")["logits"]
        diff = (logits - ours).abs().max().item()
        print(f"{name}: max |torchvision - ours| = {diff:.3g}")
        if diff > 1e-4:
            sys.exit(f"{name}: torchvision's logits differ from ours by {diff}")


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else torch.get_num_threads())
    {"generate": generate, "check": check}[sys.argv[1]](sys.argv[2])

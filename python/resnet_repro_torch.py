"""The CIFAR networks of resnet-repro in plain PyTorch, and a loader for the runs it trains.

A run folder (or a released one under results/) holds config.toml, model.safetensors,
class_index.csv and data_mean.safetensors. This module builds the network its config.toml
describes (depth 6n+2, plain or residual, shortcut option A, B or C, the input's channels, the
number of classes), loads the weights under the same names, and prepares images as the run's test
protocol does, so that the network can be used and exported outside the suite:

    import torch, resnet_repro_torch as rr
    run = rr.load_run("results/table6/fashion-mnist/resnet20/seed0")
    logits = run.model(run.prepare(images_uint8_nchw))       # images: N x C x H x W, uint8
    rr.export_onnx(run, "resnet20.onnx")

or from a shell: `python3 python/resnet_repro_torch.py onnx RUN OUT.onnx`. Only torch and
safetensors are needed (tomli too on Python 3.10; onnx and onnxscript for the export). The networks are those of Sec. 4.2
of He et al. 2015: a 3x3 conv of 16 filters, three stages of 2n 3x3 layers on 16/32/64 filters
with BN after each conv, global average pooling and a linear layer; option A's shortcuts
subsample and append zero channels where the dimensions grow.
"""

import argparse
import os
import sys

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (scripts/with-torch installs it)
    try:
        import tomli as tomllib
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("reading a run's config.toml needs Python 3.11+, or `pip install tomli` on 3.10") from e

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class ZeroPadShortcut(nn.Module):
    """Option A where dimensions grow: every stride-th position, the new channels zero."""

    def __init__(self, stride, extra):
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        grows = stride != 1 or c_in != c_out
        self.residual = shortcut is not None
        self.downsample = None
        self.pad = None
        if shortcut == "C" or (shortcut == "B" and grows):
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        elif shortcut is not None and grows:
            self.pad = ZeroPadShortcut(stride, c_out - c_in)

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            if self.downsample is not None:
                out = out + self.downsample(x)
            elif self.pad is not None:
                out = out + self.pad(x)
            else:
                out = out + x
        return F.relu(out)


class CifarResNet(nn.Module):
    """A CIFAR network of depth 6n+2; `shortcut` None for the plain net."""

    def __init__(self, depth, shortcut="A", in_channels=3, num_classes=10):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth {depth} is not 6n+2")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, c = [], 16
        for stage, width in enumerate([16, 32, 64]):
            blocks = []
            for k in range(n):
                stride = 2 if stage > 0 and k == 0 else 1
                blocks.append(BasicBlock(c, width, stride, shortcut))
                c = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


class Run:
    """A trained run: its network (in eval mode), configuration, class names and input mean."""

    def __init__(self, model, config, classes, mean):
        self.model, self.config, self.classes, self.mean = model, config, classes, mean

    @property
    def input_shape(self):
        net = self.config["net"]
        return (net["in_channels"], net["image_size"], net["image_size"])

    def prepare(self, images):
        """uint8 images N x C x H x W at the network's size -> its input: [0, 1], minus the mean."""
        if self.mean is None:
            raise ValueError("this run has no data_mean.safetensors: pass its training mean to Run.mean")
        return images.to(torch.float32) / 255.0 - self.mean


def build(config):
    """The network a run's config.toml (parsed) describes."""
    net = config["net"]
    if net.get("family") != "cifar":
        raise ValueError(f"a {net.get('family')} network: ImageNet nets have torchvision's names (torchvision.models)")
    shortcut = net.get("shortcut", "A") if net["residual"] else None
    return CifarResNet(net["depth"], shortcut, net["in_channels"], net["num_classes"])


def load_run(path, weights=None):
    """The run in folder `path` (config.toml; model.safetensors unless `weights` names another)."""
    with open(os.path.join(path, "config.toml"), "rb") as f:
        config = tomllib.load(f)
    model = build(config)
    state = load_file(weights or os.path.join(path, "model.safetensors"))
    # BN's batch counter is PyTorch's alone; everything else must match by name and shape.
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the network: missing {missing}, unexpected {unexpected}")
    model.eval()
    classes = None
    index = os.path.join(path, "class_index.csv")
    if os.path.exists(index):
        with open(index) as f:
            classes = [line.split(",", 1)[1].rstrip("\n") for line in list(f)[1:]]
    mean_file = os.path.join(path, "data_mean.safetensors")
    mean = load_file(mean_file)["mean"] if os.path.exists(mean_file) else None
    return Run(model, config, classes, mean)


def export_onnx(run, out, batch=1):
    """Exports the network (input: the prepared images, N x C x H x W float32) as ONNX at `out`,
    with a dynamic batch size; inputs named `input`, outputs `logits`."""
    x = torch.zeros((batch,) + run.input_shape)
    torch.onnx.export(
        run.model,
        (x,),
        out,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        dynamo=True,
    )
    return out


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    e = sub.add_parser("onnx", help="export a run's network as ONNX")
    e.add_argument("run")
    e.add_argument("out")
    t = sub.add_parser(
        "torchvision-weights",
        help="torchvision's ImageNet weights of a ResNet (IMAGENET1K_V1, downloaded once) as safetensors in the "
        "suite's names, a detector's backbone (make reproduce-table7/8)",
    )
    t.add_argument("arch", choices=["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
    t.add_argument("out")
    a = p.parse_args(argv)
    if a.what == "torchvision-weights":
        import torchvision
        from safetensors.torch import save_file

        model = getattr(torchvision.models, a.arch)(weights="IMAGENET1K_V1")
        state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        save_file(state, a.out)
        print(f"wrote {a.out}: torchvision's {a.arch} ImageNet weights ({len(state)} tensors)")
    if a.what == "onnx":
        run = load_run(a.run)
        export_onnx(run, a.out)
        print(f"wrote {a.out}: input {('N',) + run.input_shape} float32 (prepared: [0, 1] minus the mean), output logits")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Faster R-CNN C4 on ResNet-101 at the paper's scale, in torchvision (c4_reference.py), for the
opt-in test of tests/detect.rs: 21 classes (VOC's 20 and the background), VOC's anchors 128-512,
a batch padded to 608x1024 (images of 600x1000 and 600x800, the paper's shorter side 600 and
longer at most 1000); the last BN of each residual branch scaled by 0.2, so that 30 random blocks
keep the features finite enough for proposals to survive. Writes OUT/detect.safetensors (inputs, settings, every stage) and
OUT/detector.safetensors (the weights in the suite's names)."""
import sys

import torch
from safetensors.torch import save_file
from torchvision.models import resnet101

from c4_reference import c4_reference

g = torch.Generator().manual_seed(101)
truth = [
    {"boxes": torch.tensor([[50.0, 80, 400, 500], [500, 100, 900, 450], [300, 300, 520, 590]], dtype=torch.float64),
     "labels": torch.tensor([5, 12, 20])},
    {"boxes": torch.tensor([[100.0, 50, 700, 560], [20, 400, 200, 590]], dtype=torch.float64),
     "labels": torch.tensor([15, 7])},
]
weights, out = c4_reference(resnet101, g, anchors=(128, 256, 512), classes=21,
                            padded=(608, 1024), sizes=[(600, 1000), (600, 800)], truth=truth,
                            branch_scale=0.2)
save_file(out, f"{sys.argv[1]}/detect.safetensors")
save_file(weights, f"{sys.argv[1]}/detector.safetensors")

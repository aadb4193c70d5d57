"""torchvision's detection building blocks on seeded inputs, for tests/detect.rs: anchors, box
coding, IoU, clipping, NMS (plain and per class) and RoI max pooling with its gradient. Writes the
inputs and torchvision's outputs to OUT/detect.safetensors."""
import math
import sys

import torch
from safetensors.torch import save_file
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, nms, remove_small_boxes, roi_pool

out = {}
g = torch.Generator().manual_seed(0)


def boxes(n, size, dtype, min_side=1.0):
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size / 3 + min_side
    return torch.cat([xy, xy + wh], 1).to(dtype)


# Anchors: VOC's on a stride-16 map of a padded 608x1008 batch, odd sizes and ratios on stride 8.
for name, sizes, ratios, image, grid in [
    ("voc", (128, 256, 512), (0.5, 1.0, 2.0), (608, 1008), (38, 63)),
    ("odd", (24, 50, 90), (0.3, 1.0, 1.7, 3.0), (40, 56), (5, 7)),
]:
    gen = AnchorGenerator((sizes,), (ratios,))
    images = ImageList(torch.zeros(1, 3, *image, dtype=torch.float64), [image])
    feature = torch.zeros(1, 4, *grid, dtype=torch.float64)
    out[f"anchors_{name}"] = gen(images, [feature])[0]

# Box coding, both weightings; codes with large dw/dh to reach the clip.
refs, targets = boxes(200, 500, torch.float64), boxes(200, 500, torch.float64)
out["refs"], out["targets"] = refs, targets
codes = torch.randn(200, 12, generator=g, dtype=torch.float64) * 3
out["codes"] = codes
for name, weights in [("rpn", (1.0, 1.0, 1.0, 1.0)), ("head", (10.0, 10.0, 5.0, 5.0))]:
    coder = BoxCoder(weights)
    out[f"encoded_{name}"] = coder.encode_single(targets, refs)
    out[f"decoded_{name}"] = coder.decode_single(codes, refs)
out["iou"] = box_iou(refs, targets)
out["clipped"] = clip_boxes_to_image(refs * 1.5 - 100, (333, 444))
out["large"] = remove_small_boxes(refs, 60.0)

# NMS: float64 and float32, two thresholds; per class, below and above torchvision's switch
# between its coordinate trick (<= 1000 boxes on the CPU) and its per-class loop.
for dtype, tag in [(torch.float64, "f64"), (torch.float32, "f32")]:
    b = boxes(600, 300, dtype)
    s = torch.rand(600, generator=g, dtype=torch.float64).to(dtype)
    out[f"nms_boxes_{tag}"], out[f"nms_scores_{tag}"] = b, s
    for t in (0.3, 0.7):
        out[f"nms_keep_{tag}_{int(t * 10)}"] = nms(b, s, t)
for n in (400, 1500):
    b = boxes(n, 300, torch.float64)
    s = torch.rand(n, generator=g, dtype=torch.float64)
    c = torch.randint(0, 5, (n,), generator=g)
    out[f"bnms_boxes_{n}"], out[f"bnms_scores_{n}"], out[f"bnms_classes_{n}"] = b, s, c
    out[f"bnms_keep_{n}"] = batched_nms(b, s, c, 0.5)

# RoI pooling on ReLU features (ties at 0), regions inside, across and outside the map, tiny and
# inverted ones; its gradient for a random weighting of the output.
for dtype, tag in [(torch.float64, "f64"), (torch.float32, "f32")]:
    f = torch.randn(2, 6, 23, 31, generator=g, dtype=torch.float64).relu().to(dtype).requires_grad_()
    r = boxes(60, 560, torch.float64, min_side=0.0) - 40
    r[:5, 2:] = r[:5, :2] + torch.rand(5, 2, generator=g, dtype=torch.float64) * 3  # tiny
    r[5:8, 2:] = r[5:8, :2] - 20  # inverted
    idx = torch.randint(0, 2, (60, 1), generator=g).to(torch.float64)
    rois = torch.cat([idx, r], 1).to(dtype)
    out[f"roi_features_{tag}"], out[f"rois_{tag}"] = f.detach(), rois
    for size, scale in [((7, 7), 1 / 16), ((14, 10), 1 / 16), ((5, 6), 0.05)]:
        key = f"roi_{tag}_{size[0]}x{size[1]}_{scale}"
        pooled = roi_pool(f, rois, size, scale)
        w = torch.randn(pooled.shape, generator=g, dtype=torch.float64).to(dtype)
        (grad,) = torch.autograd.grad((pooled * w).sum(), f)
        out[f"{key}_pooled"], out[f"{key}_weights"], out[f"{key}_grad"] = pooled.detach(), w, grad

assert math.isclose(math.log(1000.0 / 16), 4.135166556742356)
save_file({k: v.contiguous() for k, v in out.items()}, f"{sys.argv[1]}/detect.safetensors")

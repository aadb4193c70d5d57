"""torchvision's detection building blocks on seeded inputs, for tests/detect.rs: anchors, box
coding, IoU, clipping, NMS (plain and per class), RoI max pooling with its gradient, matching and
sampling, the RPN (proposals, losses), and Faster R-CNN C4 on ResNet-18 stage by stage. Writes the
inputs and torchvision's outputs to OUT/detect.safetensors, the RPN's weights to OUT/rpn.safetensors
and the detector's (in the suite's names) to OUT/detector.safetensors."""
import math
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.models import resnet18
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from c4_reference import c4_reference
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

# Matching: IoU of 7 ground truths with 300 boxes, both rules; ties for a ground truth's best.
gt = boxes(7, 200, torch.float64, min_side=20.0)
cand = torch.cat([boxes(298, 200, torch.float64), gt[:2]])  # exact copies: IoU 1
quality = box_iou(gt, cand)
quality[3, 10] = quality[3, 11] = quality[3].max() + 0.01  # a tie for ground truth 3's best
out["quality"] = quality
out["matches_rpn"] = Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality)
out["matches_head"] = Matcher(0.5, 0.5, allow_low_quality_matches=False)(quality)
labels = torch.randint(-1, 3, (1000,), generator=g).to(torch.float64)
out["sample_labels"] = labels
torch.manual_seed(11)
pos, neg = BalancedPositiveNegativeSampler(256, 0.5)(
    [labels, labels[:100]]
)
out["sample_pos_0"], out["sample_neg_0"], out["sample_pos_1"], out["sample_neg_1"] = pos[0], neg[0], pos[1], neg[1]

# The RPN on an 8-channel stride-16 map of a batch padded to 128x160 (images 128x160 and 120x150),
# small anchors so that the ground truth matches some; proposals at test (top 500 of 720 -> 300)
# and in training (top 600 -> at most 2000) and the training losses, sampling from seed 7.
torch.manual_seed(5)
rpn = RegionProposalNetwork(
    AnchorGenerator(((16, 32, 64),), ((0.5, 1.0, 2.0),)),
    RPNHead(8, 9),
    0.7, 0.3, 256, 0.5,
    dict(training=600, testing=500), dict(training=2000, testing=300), 0.7,
).double()
with torch.no_grad():  # larger than the init's 0.01 so that scores and deltas mean something
    rpn.head.cls_logits.weight *= 100
    rpn.head.bbox_pred.weight *= 20
features = torch.randn(2, 8, 8, 10, generator=g, dtype=torch.float64)
images = ImageList(torch.zeros(2, 3, 128, 160, dtype=torch.float64), [(128, 160), (120, 150)])
targets = [boxes(3, 100, torch.float64, min_side=16.0), boxes(1, 100, torch.float64, min_side=30.0)]
out["rpn_features"], out["rpn_gt_0"], out["rpn_gt_1"] = features, targets[0], targets[1]
rpn.eval()
with torch.no_grad():
    props, _ = rpn(images, {"0": features})
out["rpn_test_0"], out["rpn_test_1"] = props
rpn.train()
torch.manual_seed(7)
props, losses = rpn(images, {"0": features}, [{"boxes": t} for t in targets])
out["rpn_train_0"], out["rpn_train_1"] = props[0].detach(), props[1].detach()
out["rpn_loss_objectness"] = losses["loss_objectness"].detach().reshape(1)
out["rpn_loss_boxes"] = losses["loss_rpn_box_reg"].detach().reshape(1)
save_file({k: v.contiguous() for k, v in rpn.state_dict().items()}, f"{sys.argv[1]}/rpn.safetensors")



# Faster R-CNN C4 on ResNet-18 (c4_reference.py): 4 classes with the background, anchors 32-128,
# a batch padded to 160x224 (images 160x224 and 150x200).
truth = [
    {"boxes": torch.tensor([[10.0, 20, 90, 120], [100, 30, 200, 100], [50, 60, 120, 150]], dtype=torch.float64),
     "labels": torch.tensor([1, 3, 2])},
    {"boxes": torch.tensor([[30.0, 30, 150, 140]], dtype=torch.float64), "labels": torch.tensor([2])},
]
weights, c4_out = c4_reference(resnet18, g, anchors=(32, 64, 128), classes=4,
                               padded=(160, 224), sizes=[(160, 224), (150, 200)], truth=truth)
out.update(c4_out)
save_file(weights, f"{sys.argv[1]}/detector.safetensors")



# PASCAL VOC's AP of one class, the devkit's computation as py-faster-rcnn's and detectron2's
# voc_eval write it (numpy), on 30 images of 0-4 objects (some difficult) and 200 detections near
# them or anywhere, with distinct scores.
def voc_ap(rec, prec, use_07_metric):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def voc_eval(gt_image, gt_boxes, gt_difficult, det_image, det_score, det_boxes, thresh, use_07_metric):
    class_recs, npos = {}, 0
    for img in range(30):
        m = gt_image == img
        class_recs[img] = {"bbox": gt_boxes[m], "difficult": gt_difficult[m], "det": [False] * int(m.sum())}
        npos += int((~gt_difficult[m]).sum())
    order = np.argsort(-det_score)
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, k in enumerate(order):
        R, bb, ovmax = class_recs[int(det_image[k])], det_boxes[k], -np.inf
        BBGT = R["bbox"]
        if BBGT.size > 0:
            iw = np.maximum(np.minimum(BBGT[:, 2], bb[2]) - np.maximum(BBGT[:, 0], bb[0]) + 1.0, 0.0)
            ih = np.maximum(np.minimum(BBGT[:, 3], bb[3]) - np.maximum(BBGT[:, 1], bb[1]) + 1.0, 0.0)
            inters = iw * ih
            uni = (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0) + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (
                BBGT[:, 3] - BBGT[:, 1] + 1.0) - inters
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
        if ovmax > thresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d], R["det"][jmax] = 1.0, 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07_metric)


rng = np.random.default_rng(3)
counts = rng.integers(0, 5, 30)
gt_image = np.repeat(np.arange(30), counts)
xy = rng.uniform(0, 300, (len(gt_image), 2))
gt_boxes = np.concatenate([xy, xy + rng.uniform(20, 150, (len(gt_image), 2))], 1).round()
gt_difficult = rng.uniform(size=len(gt_image)) < 0.15
near = rng.integers(0, len(gt_image), 150)
det_image = np.concatenate([gt_image[near], rng.integers(0, 30, 50)])
det_boxes = np.concatenate([gt_boxes[near] + rng.normal(0, 12, (150, 4)), np.concatenate(
    [xy := rng.uniform(0, 300, (50, 2)), xy + rng.uniform(20, 150, (50, 2))], 1)])
det_score = rng.permutation(200) / 200 + rng.uniform(0, 1e-3, 200)
for k, v in dict(gt_image=gt_image, gt_boxes=gt_boxes, gt_difficult=gt_difficult.astype(np.int64),
                 det_image=det_image, det_score=det_score, det_boxes=det_boxes).items():
    out[f"voc_{k}"] = torch.from_numpy(np.ascontiguousarray(v))
for t in (0.5, 0.7):
    out[f"voc_ap07_{int(t * 10)}"] = torch.tensor([voc_eval(gt_image, gt_boxes, gt_difficult, det_image, det_score, det_boxes, t, True)], dtype=torch.float64)
    out[f"voc_ap_{int(t * 10)}"] = torch.tensor([voc_eval(gt_image, gt_boxes, gt_difficult, det_image, det_score, det_boxes, t, False)], dtype=torch.float64)

assert math.isclose(math.log(1000.0 / 16), 4.135166556742356)
save_file({k: v.contiguous() for k, v in out.items()}, f"{sys.argv[1]}/detect.safetensors")

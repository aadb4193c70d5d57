"""Faster R-CNN C4 in torchvision, stage by stage, for tests/detect.rs: torchvision's generic
FasterRCNN with backbone = conv1..layer3, one anchor map (ratios 0.5, 1, 2), RoI max pooling 14x14
on it, box head = layer4 and average pooling, FastRCNNPredictor; random weights and random frozen
BN, float64. Run without its transform (the batch is given padded): testing (300 proposals), then
training sampling from seed 9, its losses computed without gradients."""
import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import roi_pool
from torchvision.ops.misc import FrozenBatchNorm2d


class C4Pool(torch.nn.Module):
    def forward(self, features, proposals, image_shapes):
        return roi_pool(features["0"], proposals, (14, 14), 1 / 16)


class C4Head(torch.nn.Module):
    def __init__(self, layer4):
        super().__init__()
        self.layer4 = layer4

    def forward(self, x):
        return self.layer4(x).mean((2, 3))


def c4_model(arch, g, anchors, classes, branch_scale):
    """The detector on `arch` (a torchvision resnet constructor) from seed 21, its BN drawn from `g`
    (with `branch_scale`, the last BN of each residual branch scaled by it: a deep net's features
    otherwise grow block by block until no proposal survives); and its weights in the suite's
    names."""
    torch.manual_seed(21)
    net = arch(norm_layer=FrozenBatchNorm2d)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, FrozenBatchNorm2d):
                c = m.weight.numel()
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
        if branch_scale is not None:
            for m in net.modules():
                last = getattr(m, "bn3", None) or getattr(m, "bn2", None) if hasattr(m, "downsample") else None
                if last is not None:
                    last.weight.mul_(branch_scale)
    trunk = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
    trunk.out_channels = net.fc.in_features // 2
    model = FasterRCNN(
        trunk,
        num_classes=None,
        rpn_anchor_generator=AnchorGenerator((anchors,), ((0.5, 1.0, 2.0),)),
        box_predictor=FastRCNNPredictor(net.fc.in_features, classes),
        rpn_post_nms_top_n_test=300,
    )
    model.roi_heads.box_roi_pool = C4Pool()
    model.roi_heads.box_head = C4Head(net.layer4)
    model = model.double()
    with torch.no_grad():  # objectness that ranks the anchors
        model.rpn.head.cls_logits.weight *= 10
    rename = {"backbone.0.": "backbone.conv1.", "backbone.1.": "backbone.bn1.", "backbone.4.": "backbone.layer1.",
              "backbone.5.": "backbone.layer2.", "backbone.6.": "backbone.layer3.",
              "roi_heads.box_head.layer4.": "backbone.layer4."}
    weights = {}
    for k, v in model.state_dict().items():
        for a, b in rename.items():
            if k.startswith(a):
                k = b + k[len(a):]
        weights[k] = v.contiguous()
    return model, weights


def c4_reference(arch, g, *, anchors, classes, padded, sizes, truth, branch_scale=None):
    """The detector's weights (suite's names) and, under det_* keys, its inputs (a random batch
    padded to `padded`, image i of size sizes[i], zero outside it; the ground truth), settings and
    outputs at every stage."""
    model, weights = c4_model(arch, g, anchors, classes, branch_scale)
    out = {"det_sizes": torch.tensor(sizes), "det_anchor_sizes": torch.tensor(anchors, dtype=torch.float64),
           "det_classes": torch.tensor([classes])}
    seen = {}
    model.roi_heads.box_roi_pool.register_forward_hook(lambda m, i, o: seen.update(regions=i[1], pooled=o))
    model.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: seen.update(logits=o[0], deltas=o[1]))
    x = torch.randn(len(sizes), 3, *padded, generator=g, dtype=torch.float64)
    for i, (h, w) in enumerate(sizes):
        x[i, :, h:, :] = 0
        x[i, :, :, w:] = 0
    images = ImageList(x, sizes)
    out["det_images"] = x
    for i, t in enumerate(truth):
        out[f"det_gt_boxes_{i}"], out[f"det_gt_labels_{i}"] = t["boxes"], t["labels"]
    model.eval()
    with torch.no_grad():
        feats = model.backbone(x)
        props, _ = model.rpn(images, {"0": feats})
        dets, _ = model.roi_heads({"0": feats}, props, images.image_sizes)
    out["det_test_features"] = feats
    for i in range(len(sizes)):
        out[f"det_test_proposals_{i}"] = props[i]
        for k in ("boxes", "scores", "labels"):
            out[f"det_test_{k}_{i}"] = dets[i][k]
    for k in ("logits", "deltas"):
        out[f"det_test_{k}"] = seen[k]
    out["det_test_pooled"] = seen["pooled"][:64]  # the first regions' (all of them: hundreds of MB)
    model.train()
    torch.manual_seed(9)
    with torch.no_grad():
        feats = model.backbone(x)
        props, rpn_losses = model.rpn(images, {"0": feats}, truth)
        _, head_losses = model.roi_heads({"0": feats}, props, images.image_sizes, truth)
    for i in range(len(sizes)):
        out[f"det_train_regions_{i}"] = seen["regions"][i]
    for k in ("logits", "deltas"):
        out[f"det_train_{k}"] = seen[k]
    out["det_train_pooled"] = seen["pooled"][:64]
    for k, v in {**rpn_losses, **head_losses}.items():
        out[f"det_train_{k}"] = v.reshape(1)
    return weights, {k: v.contiguous() for k, v in out.items()}

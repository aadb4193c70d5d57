"""pycocotools' COCOeval (boxes) on seeded ground truth and detections, for tests/detect.rs: the
summary (AP, AP@.5, AP@.75, AP of small and medium objects) and each category's AP over the IoU
thresholds. Ground truth with crowd boxes, an `area` unlike the box's, images without objects, a
category without objects and one without detections; detections with tied scores, more than 100
in some (image, category). Writes OUT/coco_eval.json: the inputs and pycocotools' numbers."""
import contextlib
import io
import json
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

rng = np.random.default_rng(7)
images = [{"id": i, "width": 200, "height": 160} for i in range(1, 41)]
categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 5, 9)]  # 9: no objects
annotations = []
for img in images[:34]:  # the last 6 images have no objects
    for _ in range(rng.integers(1, 8)):
        c = int(rng.choice([1, 2, 5]))
        x, y = rng.uniform(0, 150), rng.uniform(0, 120)
        w, h = rng.uniform(2, 60), rng.uniform(2, 50)
        crowd = int(rng.random() < 0.08)
        area = w * h * (rng.uniform(0.5, 1.0) if rng.random() < 0.5 else 1.0)
        annotations.append({"id": len(annotations) + 1, "image_id": img["id"], "category_id": c,
                            "bbox": [x, y, w, h], "area": area, "iscrowd": crowd})

detections = []
for a in annotations:  # jittered copies of most objects, in their category or another
    for _ in range(rng.integers(0, 3)):
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.06, 4) * [w, h, w, h]
        c = a["category_id"] if rng.random() < 0.85 else int(rng.choice([1, 2, 5, 9]))
        detections.append({"image_id": a["image_id"], "category_id": c,
                           "bbox": [x + j[0], y + j[1], max(w + j[2], 0.5), max(h + j[3], 0.5)],
                           "score": float(np.round(rng.random(), 2))})  # rounded: ties
for img in images:  # background detections, and one crowded (image, category) of 130
    for _ in range(rng.integers(0, 6)):
        detections.append({"image_id": img["id"], "category_id": int(rng.choice([1, 2, 5, 9])),
                           "bbox": [rng.uniform(0, 150), rng.uniform(0, 120), rng.uniform(2, 60),
                                    rng.uniform(2, 50)], "score": float(np.round(rng.random(), 2))})
for _ in range(130):
    detections.append({"image_id": 3, "category_id": 1,
                       "bbox": [rng.uniform(0, 150), rng.uniform(0, 120), rng.uniform(2, 60),
                                rng.uniform(2, 50)], "score": float(rng.random())})

gt = COCO()
gt.dataset = {"images": images, "categories": categories, "annotations": annotations}
with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
    dt = gt.loadRes([dict(d) for d in detections])
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
precision = ev.eval["precision"][:, :, :, 0, 2]  # [T, R, K], area all, 100 detections
per_category = []
for k, c in enumerate(ev.params.catIds):
    p = precision[:, :, k]
    per_category.append([c, float(np.mean(p[p > -1])) if (p > -1).any() else None])
json.dump({
    "images": [i["id"] for i in images],
    "categories": [c["id"] for c in categories],
    "annotations": annotations,
    "detections": detections,
    "stats": [float(s) for s in ev.stats[:5]],
    "per_category": per_category,
}, open(f"{sys.argv[1]}/coco_eval.json", "w"), default=lambda o: o.item())  # numpy scalars

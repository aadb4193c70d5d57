"""Real annotation files for tests/detect_data.rs: the four aerial photographs with VOC XML tree
boxes that the deepforest wheel ships (MIT licence; installed by scripts/with-torch without its
dependencies). Reads each XML with ElementTree, converts the boxes to pixel edges as detectron2
does (xmin - 1, ymin - 1, xmax, ymax), draws seeded detections around them (jittered, some
missed, some spurious) and scores them with pycocotools. Writes OUT/deepforest.json: the data
folder, each file's boxes and labels, the detections and pycocotools' AP, AP@.5, AP@.75."""
import contextlib
import importlib.util
import io
import json
import os
import sys
import xml.etree.ElementTree as ET

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

data = os.path.join(importlib.util.find_spec("deepforest").submodule_search_locations[0], "data")
files = [  # (annotation, image, classes)
    ("OSBS_029.xml", "OSBS_029.png", ["Tree"]),
    ("SOAP_061.xml", "SOAP_061.png", ["Alive", "Dead"]),
    ("2019_YELL_2_541000_4977000_image_crop.xml", "2019_YELL_2_541000_4977000_image_crop.png", ["Tree"]),
    ("2019_YELL_2_528000_4978000_image_crop2.xml", "2019_YELL_2_528000_4978000_image_crop2.png", ["Tree"]),
]
rng = np.random.default_rng(3)
out = {"data": data, "files": [], "detections": []}
images, annotations, detections = [], [], []
for k, (xml, image, classes) in enumerate(files):
    root = ET.parse(os.path.join(data, xml)).getroot()
    w, h = int(root.find("size/width").text), int(root.find("size/height").text)
    boxes, labels = [], []
    for obj in root.findall("object"):
        b = obj.find("bndbox")
        x0, y0, x1, y1 = (float(b.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([x0 - 1, y0 - 1, x1, y1])
        labels.append(classes.index(obj.find("name").text) + 1)
    out["files"].append({"xml": xml, "image": image, "classes": classes, "width": w, "height": h,
                         "boxes": boxes, "labels": labels})
    images.append({"id": k, "width": w, "height": h})
    for b, l in zip(boxes, labels):
        bw, bh = b[2] - b[0], b[3] - b[1]
        annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": l,
                            "bbox": [b[0], b[1], bw, bh], "area": bw * bh, "iscrowd": 0})
        if rng.random() < 0.8:
            j = rng.normal(0, 0.08, 4) * [bw, bh, bw, bh]
            detections.append({"image_id": k, "category_id": l, "score": float(rng.random()),
                               "bbox": [b[0] + j[0], b[1] + j[1], max(bw + j[2], 1.0), max(bh + j[3], 1.0)]})
    for _ in range(20):
        detections.append({"image_id": k, "category_id": int(rng.integers(1, len(classes) + 1)),
                           "score": float(rng.random()) * 0.5,
                           "bbox": [rng.uniform(0, w - 40), rng.uniform(0, h - 40), 30.0, 30.0]})
gt = COCO()
gt.dataset = {"images": images, "annotations": annotations,
              "categories": [{"id": 1, "name": "first"}, {"id": 2, "name": "second"}]}
with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes([dict(d) for d in detections]), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
out["detections"] = detections
out["stats"] = [float(s) for s in ev.stats[:3]]
json.dump(out, open(os.path.join(sys.argv[1], "deepforest.json"), "w"), default=lambda o: o.item())

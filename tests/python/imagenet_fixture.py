"""Reference side of tests/imagenet.rs: a small ImageNet-layout folder written with PIL, and what
PIL and torchvision make of it.

  imagenet_fixture.py DIR   writes DIR/imagenet/{train,val}/<wnid>/... (JPEGs of a few sizes in RGB, grey
                            and CMYK, a PNG named .JPEG, an RGBA .png, a .txt to ignore),
                            DIR/corrupt/{train,val}/... (one truncated JPEG), and
                            DIR/reference.safetensors: PIL's RGB decode of every image (key: path
                            relative to DIR, '/' as '|'), and torchvision's Resize(256) + CenterCrop(224)
                            and Resize(256) + TenCrop(224) of two images, as float tensors in [0, 1]
"""

import io
import os
import sys

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from safetensors.torch import save_file

CLASSES = ["n03000000", "n01000000", "n02000000"]  # created out of order: the index must sort them


def picture(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 255 // (w + h))], -1)
    noise = rng.integers(-20, 21, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_class(folder, k, n_extra):
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(picture(500, 375, k)).save(f"{folder}/rgb_wide.JPEG", quality=90)
    Image.fromarray(picture(375, 500, k + 10)).save(f"{folder}/rgb_tall.JPEG", quality=90)
    if n_extra:
        Image.fromarray(picture(300, 200, k + 20)).convert("L").save(f"{folder}/grey.JPEG", quality=90)
        Image.fromarray(picture(320, 240, k + 30)).convert("CMYK").save(f"{folder}/cmyk.JPEG", quality=90)
        Image.fromarray(picture(260, 300, k + 40)).save(f"{folder}/png_named.JPEG", format="PNG")
        rgba = Image.fromarray(picture(280, 280, k + 50)).convert("RGBA")
        rgba.putalpha(128)
        rgba.save(f"{folder}/rgba.png")
        Image.fromarray(picture(100, 80, k + 60)).save(f"{folder}/small.jpg", quality=90)
        with open(f"{folder}/notes.txt", "w") as f:
            f.write("not an image\n")


def main(out):
    for split, extra in [("train", True), ("val", False)]:
        for k, c in enumerate(CLASSES):
            write_class(f"{out}/imagenet/{split}/{c}", k * 100 + (0 if split == "train" else 7), extra)
    # A tree with a broken file.
    for split in ["train", "val"]:
        d = f"{out}/corrupt/{split}/n01000000"
        os.makedirs(d, exist_ok=True)
        Image.fromarray(picture(300, 300, 1)).save(f"{d}/good.JPEG", quality=90)
        if split == "train":
            buf = io.BytesIO()
            Image.fromarray(picture(300, 300, 2)).save(buf, format="JPEG", quality=90)
            with open(f"{d}/broken.JPEG", "wb") as f:
                f.write(buf.getvalue()[:300])
    refs = {}
    for root, _, files in os.walk(f"{out}/imagenet"):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".txt"):
                continue
            key = os.path.relpath(path, out).replace("/", "|")
            refs[key] = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).contiguous()
    center = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    ten = T.Compose([T.Resize(256), T.TenCrop(224)])
    for name in ["rgb_wide.JPEG", "rgb_tall.JPEG"]:
        img = Image.open(f"{out}/imagenet/val/n01000000/{name}").convert("RGB")
        refs[f"center|{name}"] = center(img).contiguous()
        refs[f"tencrop|{name}"] = torch.stack([T.ToTensor()(c) for c in ten(img)]).contiguous()
    save_file(refs, f"{out}/reference.safetensors")


if __name__ == "__main__":
    main(sys.argv[1])

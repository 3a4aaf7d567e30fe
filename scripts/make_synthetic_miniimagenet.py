"""Build a synthetic MiniImageNet in the real layout, for tests and benchmarks.

    python scripts/make_synthetic_miniimagenet.py OUT_DIR [--layout images|folders]
                                                  [--images-per-class 600] [--size 84]

100 classes with the real WordNet ids of Ravi & Larochelle's split; every class gets its own
colour and stripe pattern, every image noise and a random shift, saved as JPEG. `images` writes
OUT_DIR/images/<wnid><8-digit index>.jpg plus train.csv/val.csv/test.csv as the original;
`folders` writes OUT_DIR/{train,val,test}/<wnid>/<index>.jpg.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from maml_cli.data.miniimagenet import class_split


def class_image(rng: np.random.RandomState, class_index: int, size: int) -> np.ndarray:
    base = np.random.RandomState(class_index)
    colour = base.randint(40, 216, size=3)
    period = 4 + class_index % 9
    angle = base.rand() * np.pi
    yy, xx = np.mgrid[:size, :size]
    shift = rng.randint(0, period)
    stripes = (((np.cos(angle) * xx + np.sin(angle) * yy + shift) // period) % 2)[..., None]
    img = colour * (0.6 + 0.4 * stripes) + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make(out: Path, layout: str = "images", images_per_class: int = 600, size: int = 84, seed: int = 0) -> Path:
    rng = np.random.RandomState(seed)
    out = Path(out)
    index = 0
    for split, wnids in class_split().items():
        rows = []
        for wnid in wnids:
            for i in range(images_per_class):
                img = Image.fromarray(class_image(rng, index, size))
                if layout == "images":
                    name = f"{wnid}{i + 1:08d}.jpg"
                    (out / "images").mkdir(parents=True, exist_ok=True)
                    img.save(out / "images" / name, quality=90)
                    rows.append((name, wnid))
                else:
                    folder = out / split / wnid
                    folder.mkdir(parents=True, exist_ok=True)
                    img.save(folder / f"{i:04d}.jpg", quality=90)
            index += 1
        if layout == "images":
            with open(out / f"{split}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["filename", "label"])
                writer.writerows(rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--layout", choices=["images", "folders"], default="images")
    ap.add_argument("--images-per-class", type=int, default=600)
    ap.add_argument("--size", type=int, default=84)
    args = ap.parse_args()
    make(args.out, args.layout, args.images_per_class, args.size)
    print(
        f"wrote a synthetic MiniImageNet ({args.layout} layout, {args.images_per_class} images per class) to {args.out}"
    )


if __name__ == "__main__":
    main()

"""Build a synthetic MiniImageNet in the real layout (``maml_cli.data.fakes``), for tests and benchmarks.

    python scripts/make_synthetic_miniimagenet.py OUT_DIR [--layout images|folders]
                                                  [--images-per-class 600] [--size 84]

100 classes with the real WordNet ids of Ravi & Larochelle's split; every class gets its own
colour and stripe pattern, every image noise and a random shift, saved as JPEG. `images` writes
OUT_DIR/images/<wnid><8-digit index>.jpg plus train.csv/val.csv/test.csv as the original;
`folders` writes OUT_DIR/{train,val,test}/<wnid>/<index>.jpg.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maml_cli.data.fakes import synthetic_miniimagenet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--layout", choices=["images", "folders"], default="images")
    ap.add_argument("--images-per-class", type=int, default=600)
    ap.add_argument("--size", type=int, default=84)
    args = ap.parse_args()
    synthetic_miniimagenet(args.out, args.layout, args.images_per_class, args.size)
    print(
        f"wrote a synthetic MiniImageNet ({args.layout} layout, {args.images_per_class} images per class) to {args.out}"
    )


if __name__ == "__main__":
    main()

"""Write class-per-folder image sets for `dataset=image_folder` and `maml-adapt`, from files this
project can make without a download.

    # Omniglot characters as PNGs (dark ink on white, 105x105, as the official files):
    python scripts/make_image_folder.py omniglot OUT --source ../shared/data/omniglot [--classes 50]
           [--set images_evaluation] [--layout classes|splits]
    # A handwriting-like set that is not Omniglot: letters, digits and symbols of Latin, Greek and
    # Cyrillic drawn with matplotlib's bundled fonts, each example with its own font, slant, scale,
    # rotation, stroke width and blur:
    python scripts/make_image_folder.py glyphs OUT [--classes 100] [--per-class 20] [--size 105]
    # A few-shot task for maml-adapt, taken from such a set (support: SHOTS images per class;
    # query: class folders of QUERY images, to be scored):
    python scripts/make_image_folder.py task SET_DIR OUT [--ways 5] [--shots 1] [--query 5] [--seed 0]

`--layout splits` writes OUT/{train,val,test}/<class>/ (60/20/20% of the classes); `classes`
writes OUT/<class>/ and lets `dataset.train_classes` / `val_classes` split them.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

GLYPHS = (
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghijkmnqrtуфяжшщэюбгдлпцчъыΓΔΘΛΞΠΣΦΨΩαβγδεζηθλμξπρσφψω"
    "ЖЗИЙЛПФЦЧШЩЪЫЭЮЯ§¶&@#%?!∂∑∏√∞≈≠≤≥∫"
)
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
)


def _place(out: Path, layout: str, names, rng) -> dict:
    """class name -> its folder under ``out``, in the chosen layout."""
    if layout == "classes":
        return {n: out / n for n in names}
    order = rng.permutation(len(names))
    cut = [int(0.6 * len(names)), int(0.8 * len(names))]
    split_of = {}
    for rank, i in enumerate(order):
        split_of[names[i]] = "train" if rank < cut[0] else "val" if rank < cut[1] else "test"
    return {n: out / split_of[n] / n for n in names}


def omniglot(out: Path, source: Path, classes: int, set_name: str, layout: str, seed: int) -> Path:
    with np.load(Path(source) / f"{set_name}.npz") as z:
        paper = z["images"]  # bool [characters, drawers, 105, 105], True = white paper
    rng = np.random.RandomState(seed)
    chosen = np.sort(rng.choice(len(paper), size=min(classes, len(paper)), replace=False))
    names = [f"character{c:04d}" for c in chosen]
    folders = _place(Path(out), layout, names, rng)
    for c, name in zip(chosen, names):
        folders[name].mkdir(parents=True, exist_ok=True)
        for d, img in enumerate(paper[c]):
            Image.fromarray(np.where(img, 255, 0).astype(np.uint8)).save(folders[name] / f"{d + 1:02d}.png")
    return Path(out)


def _fonts():
    import matplotlib

    folder = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    return [str(folder / f) for f in FONTS]


def glyph(char: str, font_path: str, rng: np.random.RandomState, size: int) -> Image.Image:
    """One dark-on-white drawing of ``char`` with its own font, scale, place, rotation, shear,
    stroke width and blur."""
    canvas = 2 * size
    img = Image.new("L", (canvas, canvas), 255)
    font = ImageFont.truetype(font_path, int(size * rng.uniform(0.55, 0.8)))
    draw = ImageDraw.Draw(img)
    draw.text((canvas / 2, canvas / 2), char, fill=0, font=font, anchor="mm")
    shear = rng.uniform(-0.3, 0.3)
    img = img.transform(
        img.size,
        Image.Transform.AFFINE,
        (1, shear, -shear * canvas / 2, 0, 1, 0),
        resample=Image.Resampling.BILINEAR,
        fillcolor=255,
    )
    img = img.rotate(
        rng.uniform(-15, 15),
        resample=Image.Resampling.BILINEAR,
        fillcolor=255,
        translate=tuple(rng.uniform(-0.08, 0.08, 2) * size),
    )
    width = rng.randint(0, 3)
    if width:
        img = img.filter(ImageFilter.MinFilter(2 * width + 1))  # thicker strokes
    img = img.crop((size // 2, size // 2, size // 2 + size, size // 2 + size))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def glyphs(out: Path, classes: int, per_class: int, size: int, layout: str, seed: int) -> Path:
    rng = np.random.RandomState(seed)
    chars = list(dict.fromkeys(GLYPHS))[:classes]
    names = [f"glyph{i:03d}_U{ord(c):04X}" for i, c in enumerate(chars)]
    folders = _place(Path(out), layout, names, rng)
    fonts = _fonts()
    for char, name in zip(chars, names):
        folders[name].mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            glyph(char, fonts[rng.randint(len(fonts))], rng, size).save(folders[name] / f"{i:02d}.png")
    return Path(out)


def task(set_dir: Path, out: Path, ways: int, shots: int, query: int, seed: int) -> Path:
    """A few-shot task from a class-per-folder set: OUT/support/<class>/ and OUT/query/<class>/."""
    rng = np.random.RandomState(seed)
    set_dir = Path(set_dir)
    folders = sorted(p for p in set_dir.rglob("*") if p.is_dir() and any(f.suffix == ".png" for f in p.iterdir()))
    chosen = [folders[i] for i in rng.choice(len(folders), ways, replace=False)]
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    for folder in chosen:
        files = sorted(folder.glob("*.png"))
        picked = [files[i] for i in rng.choice(len(files), shots + query, replace=False)]
        for kind, group in (("support", picked[:shots]), ("query", picked[shots:])):
            (out / kind / folder.name).mkdir(parents=True, exist_ok=True)
            for f in group:
                shutil.copy(f, out / kind / folder.name / f.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    o = sub.add_parser("omniglot", help="Omniglot characters from its .npz arrays")
    o.add_argument("out", type=Path)
    o.add_argument("--source", type=Path, default=Path("../shared/data/omniglot"))
    o.add_argument("--classes", type=int, default=50)
    o.add_argument("--set", default="images_evaluation", choices=("images_background", "images_evaluation"))
    g = sub.add_parser("glyphs", help="letters and symbols drawn with varied fonts (not Omniglot)")
    g.add_argument("out", type=Path)
    g.add_argument("--classes", type=int, default=100)
    g.add_argument("--per-class", type=int, default=20)
    g.add_argument("--size", type=int, default=105)
    for p in (o, g):
        p.add_argument("--layout", choices=("classes", "splits"), default="classes")
        p.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("task", help="a few-shot task (support/ and query/) from a class-per-folder set")
    t.add_argument("set_dir", type=Path)
    t.add_argument("out", type=Path)
    t.add_argument("--ways", type=int, default=5)
    t.add_argument("--shots", type=int, default=1)
    t.add_argument("--query", type=int, default=5)
    t.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    if a.what == "omniglot":
        print(omniglot(a.out, a.source, a.classes, a.set, a.layout, a.seed))
    elif a.what == "glyphs":
        print(glyphs(a.out, a.classes, a.per_class, a.size, a.layout, a.seed))
    else:
        print(task(a.set_dir, a.out, a.ways, a.shots, a.query, a.seed))


if __name__ == "__main__":
    main()

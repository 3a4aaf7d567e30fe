"""MiniImageNet (Vinyals et al. 2016, split of Ravi & Larochelle 2017) from images the user has.

The images are ImageNet crops and cannot be downloaded by a program, so ``dataset.path`` must
name a folder in one of the two layouts people have:
- Ravi & Larochelle's: ``images/n0153282900000005.jpg`` ... (the split CSVs are not needed: the
  class split ships with this package, ``miniimagenet_classes.json``);
- per-split class folders: ``train/n01532829/*.jpg``, ``val/...``, ``test/...``.
Both are read by the class-folder reader of ``dataset=image_folder`` (``image_folder.py``), with
this split: images are resized to ``image_size`` (84) if needed and cached once as uint8 (about
1.3 GB for the full set) in a .npy file that is memory-mapped, so the data is held once in RAM, by
the device array.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

import numpy as np

from maml_cli.data.episodes import ImageClassTasks
from maml_cli.data.image_folder import IMAGE_SUFFIXES, image_files, read_classes
from maml_cli.errors import UserError

log = logging.getLogger(__name__)
SPLIT_NAMES = ("train", "val", "test")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
MiniImageNet cannot be downloaded automatically (ImageNet terms of access). Get the 60,000 84x84
images of Ravi & Larochelle's split (e.g. the `images/` folder their data-preparation script
builds from ILSVRC-2012 with train.csv/val.csv/test.csv) and pass dataset.path=DIR, where DIR holds
either images/<wnid><index>.jpg or train/<wnid>/*.jpg, val/<wnid>/*.jpg, test/<wnid>/*.jpg.
For a synthetic stand-in in the same layout: python scripts/make_synthetic_miniimagenet.py DIR"""


def class_split() -> dict[str, list[str]]:
    """The 64/16/20 WordNet ids of the standard split, shipped with the package."""
    data = json.loads((resources.files("maml_cli.data") / "miniimagenet_classes.json").read_text())
    return {name: data[name] for name in SPLIT_NAMES}


def find_images(path: Path, images_per_class: int | None = None) -> dict[str, list[Path]]:
    """wnid -> its image files (sorted), for every class of the split, from either layout."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"dataset.path={path} is not a directory.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    split = class_split()
    files: dict[str, list[Path]] = {}
    if (path / "images").is_dir():
        layout = "images/"
        by_class: dict[str, list[Path]] = {}
        for f in (path / "images").iterdir():
            if f.suffix.lower() in IMAGE_SUFFIXES:
                by_class.setdefault(f.name[:9], []).append(f)
        for names in split.values():
            for wnid in names:
                files[wnid] = sorted(by_class.get(wnid, []))
    elif all((path / s).is_dir() for s in SPLIT_NAMES):
        layout = "train/ val/ test/ class folders"
        for s, names in split.items():
            for wnid in names:
                folder = path / s / wnid
                files[wnid] = image_files(folder) if folder.is_dir() else []
    else:
        raise UserError(
            f"{path} has neither images/ nor train/, val/ and test/ folders.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    missing = [w for w, fs in files.items() if not fs]
    if missing:
        raise UserError(
            f"{path} ({layout}): no images for {len(missing)} of the 100 classes, e.g. "
            f"{', '.join(missing[:3])}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    counts = {w: len(fs) for w, fs in files.items()}
    expected = images_per_class or max(counts.values())
    wrong = {w: n for w, n in counts.items() if n != expected}
    if wrong:
        w, n = next(iter(wrong.items()))
        raise UserError(
            f"{path} ({layout}): {len(wrong)} classes do not hold {expected} images like the others "
            f"(e.g. {w} has {n}; the real set has 600 per class). The copy is incomplete."
        )
    return files


def load_miniimagenet(path, image_size: int = 84, images_per_class: int | None = None, cache_dir=None):
    """uint8 [100, images_per_class, size, size, 3] (memory-mapped from the cache), classes in the
    order train, val, test of ``class_split()``."""
    files = find_images(path, images_per_class)
    order = [w for names in class_split().values() for w in names]
    read = read_classes(
        {w: files[w] for w in order},
        image_size=image_size,
        channels=3,
        cache_dir=cache_dir,
        kind="miniimagenet",
        what=f"MiniImageNet {path}",
        hint="replace it from your copy of MiniImageNet",
    )
    return read.images.reshape(len(order), int(read.counts[0]), *read.images.shape[1:])


class MiniImageNetTasks(ImageClassTasks):
    def __init__(self, cfg):
        if not cfg.path:
            raise UserError("dataset=miniimagenet needs dataset.path.\n" + MANUAL_DOWNLOAD_INSTRUCTIONS)
        images = load_miniimagenet(cfg.path, cfg.image_size, cfg.images_per_class, cfg.cache_dir)
        self.source = f"{cfg.path} (cache {getattr(images, 'filename', None)})"
        bounds = np.cumsum([0, *(len(v) for v in class_split().values())])
        splits = {name: np.arange(bounds[i], bounds[i + 1]) for i, name in enumerate(SPLIT_NAMES)}
        super().__init__(cfg, images, splits, rotate=False, what="MiniImageNet")

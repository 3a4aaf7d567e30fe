"""Images from folders, one folder per class: the reader behind ``dataset=image_folder``, the
MiniImageNet folders and ``maml-adapt``'s support and query sets.

``dataset.path`` holds either
- ``ROOT/<class>/<image>``: the classes are split at random (``dataset.split_seed``) into
  ``train_classes`` / ``val_classes`` / the rest (counts, or fractions when below 1), or
- ``ROOT/{train,val,test}/<class>/<image>``: the split is the folders'.
PNG and JPEG of any size are resized to ``image_size`` (LANCZOS); ``channels`` 1 or 3 converts every
image (null: as the files are, which must then agree). Classes may hold different numbers of
images: the images are stored flat, [all images, H, W, C] with each class's ``counts``, and a task
draws only from what its classes hold. The decoded arrays are cached once per folder content
(each file's name, size and modification time): a changed folder is read again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from maml_cli.data.cache import cached
from maml_cli.data.episodes import ImageClassTasks, check_task_shape
from maml_cli.errors import UserError
from maml_cli.paths import default_cache_dir

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_NAMES = ("train", "val", "test")
# dataset.resample (config.schema.IMAGE_RESAMPLE lists the same names; a test keeps them equal)
RESAMPLE = {name: getattr(Image.Resampling, name.upper()) for name in ("lanczos", "bilinear", "nearest")}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
CACHE_VERSION = 2  # 2: one folder per entry (images.npy + classes.json), published whole

LAYOUT_HELP = (
    "dataset.path must hold one folder per class with its images, ROOT/<class>/<image> "
    "(PNG or JPEG), or ROOT/train/<class>/..., ROOT/val/<class>/..., ROOT/test/<class>/... "
    "(scripts/make_image_folder.py writes an example)"
)


# What cameras, file managers and zip tools leave beside the images: skipped without a word.
SKIPPED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini", "@eaDir"}


def _shown(path: Path | str) -> str:
    """A path as it can be printed: a name that is not UTF-8 shows its bytes escaped."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _entries(folder: Path):
    """The entries of ``folder`` a reader considers: not hidden, not a tool's leftovers, and with a
    name that can be shown and stored (a name that is not UTF-8 is an error naming it)."""
    with os.scandir(folder) as found:
        for entry in found:
            if entry.name.startswith(".") or entry.name in SKIPPED_NAMES:
                continue
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(
                    f"{_shown(entry.path)} has a name that is not UTF-8 text: rename it (convmv -f latin1 -t utf-8 "
                    "-r --notest DIR renames a whole folder)"
                ) from None
            yield entry


def _broken_link(entry: os.DirEntry) -> UserError | None:
    """The error for a symbolic link that leads nowhere (a loop, or a missing target)."""
    if not entry.is_symlink():
        return None
    try:
        os.stat(entry.path)
    except OSError as e:
        why = "loops back on itself" if e.errno == errno.ELOOP else f"points to nothing ({e.strerror})"
        return UserError(f"{_shown(entry.path)} is a symbolic link that {why}: fix or remove the link")
    return None


def _is(entry: os.DirEntry, kind: str) -> bool:
    """``entry.is_file()`` / ``is_dir()`` (through links), False where a link loops."""
    try:
        return entry.is_file() if kind == "file" else entry.is_dir()
    except OSError:
        return False


def image_files(folder: Path) -> list[Path]:
    """The PNG and JPEG files in ``folder`` (not hidden), sorted by name; a broken link named like
    an image is an error."""
    files = []
    for entry in _entries(Path(folder)):
        if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
            continue
        if _is(entry, "file"):
            files.append(Path(entry.path))
        elif (broken := _broken_link(entry)) is not None:
            raise broken
    return sorted(files)


def subfolders(folder: Path) -> list[Path]:
    """The class folders in ``folder``: not hidden, not ``__MACOSX``; a broken link is an error."""
    found = []
    for entry in _entries(Path(folder)):
        if _is(entry, "dir"):
            found.append(Path(entry.path))
        elif (broken := _broken_link(entry)) is not None:
            raise broken
    return sorted(found)


def class_folders(root: Path, what: str = "dataset.path") -> dict[str, list[Path]]:
    """class name -> its image files, for each subfolder of ``root``; an empty class is an error."""
    root = Path(root)
    folders = subfolders(root)
    if not folders:
        loose = image_files(root)
        raise UserError(
            f"{what}={root} has no class folders"
            + (f" (it holds {len(loose)} images directly)" if loose else "")
            + f". {LAYOUT_HELP}"
        )
    classes = {f.name: image_files(f) for f in folders}
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise UserError(
            f"{what}: {len(empty)} class folder{'s' if len(empty) > 1 else ''} of {root} "
            f"{'hold' if len(empty) > 1 else 'holds'} no PNG or "
            f"JPEG images: {', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}; add images or "
            "remove the folder"
        )
    return classes


def find_classes(path, layout: str = "auto") -> dict[str | None, dict[str, list[Path]]]:
    """{split: {class: files}} for ``ROOT/{train,val,test}/<class>``, or {None: {class: files}}
    for ``ROOT/<class>``."""
    if not path:
        raise UserError(f"dataset=image_folder needs dataset.path=DIR. {LAYOUT_HELP}")
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"dataset.path={root} does not exist. {LAYOUT_HELP}")
    if not root.is_dir():
        raise UserError(f"dataset.path={root} is a file, not a folder. {LAYOUT_HELP}")
    present = [s for s in SPLIT_NAMES if (root / s).is_dir()]
    if layout == "auto":
        layout = "splits" if present else "classes"
    if layout == "splits":
        if len(present) < len(SPLIT_NAMES):
            missing = [s for s in SPLIT_NAMES if s not in present]
            raise UserError(
                f"dataset.path={root} (dataset.layout=splits) has no {'/, '.join(missing)}/ folder: "
                "give all of train/, val/ and test/, or use dataset.layout=classes"
            )
        return {s: class_folders(root / s, f"dataset.path {s}/") for s in SPLIT_NAMES}
    return {None: class_folders(root)}


# --- decoding --------------------------------------------------------------------------------------


SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I"}  # grey images of 16 (or 32) bits per pixel


@contextlib.contextmanager
def _opened(source: Path | bytes, name: str, hint: str):
    """``Image.open`` whose every failure is one line naming the file: empty, not an image,
    truncated, or over Pillow's decompression-bomb limit (also its warning band, 1-2x the limit)."""
    if not isinstance(source, bytes) and Path(source).stat().st_size == 0:
        raise UserError(f"{name} is empty (0 bytes); {hint}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(
            f"{name} is too large to decode safely ({e}); shrink it (or raise PIL.Image.MAX_IMAGE_PIXELS "
            f"if you trust it), or remove it"
        ) from None
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{name} is not a readable image ({type(e).__name__}: {e}); {hint}") from e


def file_channels(path: Path) -> int:
    """1 for a grey image, 3 for a colour one (read from the header only)."""
    with _opened(path, _shown(path), "replace or remove it") as img:
        return 1 if img.mode in GREY_MODES else 3


def _convert(img: Image.Image, channels: int) -> Image.Image:
    """Grey ("L") or "RGB": 16-bit grey scaled to 8 bits (Pillow's own conversion clips it), a
    transparent image laid on white (as a viewer shows it), palettes and CMYK converted."""
    if img.mode in SIXTEEN_BIT:
        wide = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.round(wide / 257), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
    return img.convert("L" if channels == 1 else "RGB")


def decode_image(
    source: Path | bytes,
    *,
    channels: int,
    image_size: int | None = None,
    resample: str = "lanczos",
    invert: bool = False,
    name: str | None = None,
    hint: str = "replace or remove it",
) -> np.ndarray:
    """uint8 [H, W, channels]: ``source`` (a file, or its bytes) converted to grey or RGB, inverted
    if asked (dark ink on white paper -> bright on black, as Omniglot is stored), then resized to
    ``image_size`` (None: as it is)."""
    name = name or ("image" if isinstance(source, bytes) else _shown(source))
    with _opened(source, name, hint) as img:
        img = _convert(img, channels)  # the pixels are read here: a truncated file fails now, named
    if invert:
        img = Image.fromarray(255 - np.asarray(img, dtype=np.uint8))
    if image_size is not None and img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), RESAMPLE[resample])
    array = np.asarray(img, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def infer_channels(files: Sequence[Path], what: str) -> int:
    """The channels all ``files`` share; mixed grey and colour is an error that says how to fix it."""
    grey, colour = [], []
    for f in files:
        (grey if file_channels(f) == 1 else colour).append(f)
    if grey and colour:
        raise UserError(
            f"{what} mixes grey ({len(grey)}, e.g. {grey[0]}) and colour ({len(colour)}, e.g. "
            f"{colour[0]}) images: set dataset.channels=1 or 3 to convert them all"
        )
    return 1 if grey else 3


# --- reading a set of classes, cached ---------------------------------------------------------------


@dataclass
class FolderImages:
    images: np.ndarray  # uint8 [all images, H, W, C], class after class (memory-mapped from the cache)
    counts: np.ndarray  # images per class
    names: list[str]  # class names, in order
    cache_file: Path | None = None


def cache_key(kind: str, classes: dict[str, list[Path]], settings: tuple) -> str:
    h = hashlib.sha256(repr((CACHE_VERSION, kind, settings)).encode())
    for name, files in classes.items():
        h.update(f"[{name}]".encode())
        for f in files:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def read_classes(
    classes: dict[str, list[Path]],
    *,
    image_size: int,
    channels: int | None = None,
    resample: str = "lanczos",
    invert: bool = False,
    cache_dir=None,
    kind: str = "images",
    what: str = "dataset.path",
    hint: str = "replace or remove it",
) -> FolderImages:
    """Every class's images decoded and resized into one uint8 array, cached as the folder
    ``<cache>/<kind>-<size>px-<key>/`` (``images.npy`` and ``classes.json``, published together:
    ``data.cache.cached``) so later runs memory-map it."""
    names = list(classes)
    counts = np.array([len(classes[n]) for n in names], dtype=np.int64)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = cache_key(kind, classes, (image_size, channels, resample, invert))
    entry = cache / f"{kind}-{image_size}px-{key}"

    def read(folder: Path) -> FolderImages:
        meta = json.loads((folder / "classes.json").read_text())
        images = np.load(folder / "images.npy", mmap_mode="r")
        if meta["names"] != names or meta["counts"] != counts.tolist() or len(images) != counts.sum():
            raise ValueError("it holds other classes")
        return FolderImages(images, counts, names, folder / "images.npy")

    def build(folder: Path) -> None:
        all_files = [f for n in names for f in classes[n]]
        use_channels = infer_channels(all_files, what) if channels is None else channels
        shape = (len(all_files), image_size, image_size, use_channels)
        log.info(
            "%s: reading %d images of %d classes into %s (%.2f GB)",
            what,
            len(all_files),
            len(names),
            entry,
            np.prod(shape) / 1e9,
        )
        folder.mkdir()
        out = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        try:
            for i, f in enumerate(all_files):
                out[i] = decode_image(
                    f, channels=use_channels, image_size=image_size, resample=resample, invert=invert, hint=hint
                )
            out.flush()
        finally:
            del out
        meta = {"names": names, "counts": counts.tolist(), "channels": use_channels}
        (folder / "classes.json").write_text(json.dumps(meta))

    found = cached(entry, read, build, what=f"{what} cache")
    log.info("%s: images from %s", what, found.cache_file)
    return found


# --- the dataset ------------------------------------------------------------------------------------


def class_count(value: float, total: int, key: str) -> int:
    """``value`` classes: a count (>= 1, whole) or a fraction of ``total`` (below 1)."""
    if value < 0:
        raise UserError(f"dataset.{key} must be >= 0 (got {value})")
    if value < 1:
        return int(round(value * total))
    if value != int(value):
        raise UserError(f"dataset.{key} must be a whole number of classes or a fraction below 1 (got {value})")
    return int(value)


def random_split(num_classes: int, train: float, val: float, seed: int) -> dict[str, np.ndarray]:
    n_train, n_val = class_count(train, num_classes, "train_classes"), class_count(val, num_classes, "val_classes")
    if n_train + n_val > num_classes:
        raise UserError(
            f"dataset.train_classes ({n_train}) + dataset.val_classes ({n_val}) is more than the "
            f"{num_classes} classes in dataset.path"
        )
    order = np.random.RandomState(seed).permutation(num_classes)
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }


class ImageFolderTasks(ImageClassTasks):
    """N-way K-shot tasks from the user's class folders."""

    allow_empty_splits = True  # a folder meant only for evaluation may leave train/val empty

    def __init__(self, cfg):
        found = find_classes(cfg.path, cfg.layout)
        if None in found:  # ROOT/<class>: split at random
            classes = found[None]
            splits = random_split(len(classes), cfg.train_classes, cfg.val_classes, cfg.split_seed)
            layout = "classes, split at random"
        else:
            classes, splits, start = {}, {}, 0
            for split, members in found.items():
                classes.update({f"{split}/{name}": files for name, files in members.items()})
                splits[split] = np.arange(start, start + len(members))
                start += len(members)
            layout = "train/ val/ test/ folders"
        # Task shapes are checked on the file listing, before any image is decoded.
        check_task_shape(
            cfg.ways,
            cfg.shots,
            cfg.query_shots,
            splits,
            np.array([len(f) for f in classes.values()]),
            "dataset.path",
            names=list(classes),
            allow_empty_splits=True,
        )
        read = read_classes(
            classes,
            image_size=cfg.image_size,
            channels=cfg.channels,
            resample=cfg.resample,
            invert=cfg.invert,
            cache_dir=cfg.cache_dir,
            kind="image_folder",
        )
        self.class_names = read.names
        self.source = (
            f"{cfg.path} ({layout}; {len(read.names)} classes, {int(read.counts.sum())} images; "
            f"cache {read.cache_file})"
        )
        super().__init__(
            cfg, read.images, splits, rotate=cfg.rotate, what="dataset.path", counts=read.counts, class_names=read.names
        )

"""Omniglot ingestion: three kinds of source, one preprocessed cache.

Sources, by ``dataset.path``:
- unset: the official zips downloaded by TensorFlow Datasets' download manager, with the
  checksums TFDS registers for its ``omniglot`` builder (no TensorFlow needed). A file already in
  ``<data_dir>/downloads/manual/`` is used instead of the network, after the same checksum check.
  Offline, the download fails within seconds and leaves nothing behind (``download_with_tfds``).
- a directory with the official zips (``images_background.zip``, ``images_evaluation.zip``, or
  the ``images_background_small1/2.zip`` ones), or those extracted
  (``images_background/<alphabet>/<character>/NNNN_DD.png``);
- a directory with ``images_background.npz`` / ``images_evaluation.npz`` (bool arrays
  [characters, drawers, 105, 105], True = white paper).

Preprocessing, done once per source, image size and filter: invert so ink is bright (255) on black
(0), resize 105 -> ``image_size``, store uint8 [characters, drawers, size, size, 1]. Characters are
in the official order (by the NNNN file number), drawers by DD.

Resizing (``dataset.resample``): ``lanczos`` (default) gives grey anti-aliased strokes. The MAML
code's 28x28 set (cbfinn/maml data/omniglot_resized/resize_images.py) asked Pillow for LANCZOS on
the official PNGs, which are mode "1" (one bit per pixel), for which Pillow resizes with NEAREST:
binary images. ``nearest`` reproduces that exactly.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from maml_cli import stop_signals
from maml_cli.data import download
from maml_cli.data.cache import cached
from maml_cli.data.image_folder import decode_image
from maml_cli.errors import UserError, one_of
from maml_cli.paths import default_cache_dir

log = logging.getLogger(__name__)

OFFICIAL_SETS = ("images_background", "images_evaluation")
SMALL_SETS = ("images_background_small1", "images_background_small2")
KNOWN_SETS = OFFICIAL_SETS + SMALL_SETS
CACHE_VERSION = 1
RESAMPLE = {"lanczos": "LANCZOS", "nearest": "NEAREST"}  # dataset.resample -> Pillow's filter
_PNG_NAME = re.compile(r"(?:^|/)([^/]+)/([^/]+)/(\d+)_(\d+)\.png$")

HOW_TO_GET = (
    "Get Omniglot from https://github.com/brendenlake/omniglot/tree/master/python "
    "(images_background.zip and images_evaluation.zip) and pass dataset.path=DIR, the folder that "
    "holds them (zipped or extracted); or leave dataset.path unset to download them through "
    "TensorFlow Datasets (needs network)."
)


@dataclass
class OmniglotArrays:
    images: np.ndarray  # uint8 [characters, drawers, size, size, 1], ink bright on black
    sets: dict[str, int]  # set name -> characters, in order along axis 0
    source: str = ""  # where the arrays were read from, for the log

    def set_ranges(self) -> dict[str, np.ndarray]:
        out, start = {}, 0
        for name, count in self.sets.items():
            out[name] = np.arange(start, start + count)
            start += count
        return out


@dataclass(frozen=True)
class _SetSource:
    name: str
    kind: str  # npz | zip | png
    location: Path


def find_sources(path: Path) -> list:
    """The Omniglot sets found in ``path``, preferring npz, then zip, then extracted folders."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"dataset.path={path} does not exist. {HOW_TO_GET}")
    if not path.is_dir():
        raise UserError(
            f"dataset.path={path} is a file; it must be the folder that holds the Omniglot zips or arrays. {HOW_TO_GET}"
        )
    found = []
    for name in KNOWN_SETS:
        for kind, candidate in (("npz", path / f"{name}.npz"), ("zip", path / f"{name}.zip"), ("png", path / name)):
            if candidate.is_file() or (kind == "png" and candidate.is_dir()):
                found.append(_SetSource(name, kind, candidate))
                break
    if any(s.name in OFFICIAL_SETS for s in found):  # the small sets repeat background characters
        found = [s for s in found if s.name in OFFICIAL_SETS]
    if not found:
        raise UserError(
            f"no Omniglot data in {path}: expected some of "
            + ", ".join(f"{n}.npz / {n}.zip / {n}/" for n in OFFICIAL_SETS)
            + f". {HOW_TO_GET}"
        )
    return found


def official_urls() -> dict:
    """TFDS's registered URLs for its ``omniglot`` builder: {url: UrlInfo (size, sha256, filename)}."""
    import tensorflow_datasets as tfds

    return dict(tfds.builder_cls("omniglot").url_infos)


def download_with_tfds(data_dir: str | None, sets=OFFICIAL_SETS) -> list:
    """The official zips through TFDS's download manager, checked against TFDS's registered
    checksums; ``<data_dir>/downloads/manual/<name>.zip`` is used when present.

    Offline it fails in seconds, not after TFDS's minutes of retries: a host is probed before TFDS
    opens its URL. A failure or a stop leaves nothing new under ``data_dir``."""
    import tensorflow_datasets as tfds

    data_dir = Path(data_dir or Path.home() / "tensorflow_datasets").expanduser().absolute()
    manual = data_dir / "downloads" / "manual"
    url_infos = official_urls()
    urls = {name: next(u for u in url_infos if u.endswith(f"/{name}.zip")) for name in sets}
    tfds.disable_progress_bar()  # its bars would be lines on stderr around our one-line messages
    # A console script's Ctrl-C or SIGTERM ends the process at once, which would leave TFDS's
    # temporary files: deferred, it waits for this block, which stops the download and cleans up.
    with download.ONE_DOWNLOAD_AT_A_TIME, stop_signals.deferred():
        created = download.Created(data_dir)
        network = download.BoundedNetwork()
        try:
            with network.installed():
                manager = tfds.download.DownloadManager(
                    download_dir=data_dir / "downloads",
                    manual_dir=manual,
                    url_infos=url_infos,
                    force_checksums_validation=True,
                    dataset_name="omniglot",
                )
                paths = network.run(lambda name: manager.download(urls[name]), list(sets))
        except BaseException as e:
            created.remove()
            if not isinstance(e, Exception) or isinstance(e, download.Stopped):  # a stop, not an error
                raise
            manual_file = manual / f"{network.failed}.zip" if network.failed else None
            raise UserError(
                f"could not get Omniglot through TensorFlow Datasets: {download.cause(e, manual_file)}. "
                f"Fetch {' and '.join(urls.values())}, then pass the folder that holds them as dataset.path=DIR, "
                f"or put them in {manual}/"
            ) from e
    return [_SetSource(name, "zip", Path(paths[name])) for name in sets]


# --- readers: each returns uint8 [characters, drawers, H, W], ink bright ---------------------------


def _read_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path) as z:
            images = z["images"]
    except Exception as e:
        raise UserError(f"{path} cannot be read as an Omniglot .npz ({type(e).__name__}: {e}). {HOW_TO_GET}") from e
    if images.ndim != 4:
        raise UserError(f"{path}: 'images' has shape {images.shape}; expected [characters, drawers, H, W]")
    if images.dtype == bool:  # True is white paper
        return np.where(images, 0, 255).astype(np.uint8)
    return (255 - images).astype(np.uint8)


def _group_pngs(entries, origin: str) -> np.ndarray:
    """entries: (relative name, bytes loader). Groups by character file number, orders drawers."""
    chars: dict[int, dict[int, object]] = {}
    for name, load in entries:
        if any(part.startswith(".") or part == "__MACOSX" for part in name.split("/")):
            continue  # a zip tool's or a Mac's leftovers (__MACOSX/..., ._0001_01.png)
        m = _PNG_NAME.search(name)
        if m:
            chars.setdefault(int(m.group(3)), {})[int(m.group(4))] = (name, load)
    if not chars:
        raise UserError(f"{origin} holds no <alphabet>/<character>/NNNN_DD.png images. {HOW_TO_GET}")
    counts = {len(d) for d in chars.values()}
    if len(counts) != 1:
        bad = min(chars, key=lambda c: len(chars[c]))
        raise UserError(
            f"{origin}: characters have different numbers of drawers ({sorted(counts)}); "
            f"character {bad:04d} has {len(chars[bad])}. The source is incomplete. {HOW_TO_GET}"
        )
    out = []
    for number in sorted(chars):
        row = []
        for drawer in sorted(chars[number]):
            name, load = chars[number][drawer]
            row.append(decode_image(load(), channels=1, invert=True, name=f"{origin}: {name}", hint=HOW_TO_GET)[..., 0])
        out.append(row)
    return np.asarray(out, dtype=np.uint8)


def _read_zip(path: Path) -> np.ndarray:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".png")]
            return _group_pngs([(n, lambda n=n: zf.read(n)) for n in names], str(path))
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path} is not a readable zip file ({e}); it may be truncated. {HOW_TO_GET}") from e


def _read_tree(path: Path) -> np.ndarray:
    files = sorted(path.rglob("*.png"))
    return _group_pngs([(f.relative_to(path).as_posix(), f.read_bytes) for f in files], str(path))


READERS = {"npz": _read_npz, "zip": _read_zip, "png": _read_tree}


def preprocess(ink: np.ndarray, image_size: int, resample: str = "lanczos") -> np.ndarray:
    """uint8 [C, D, H, W] ink-bright -> uint8 [C, D, size, size, 1], resized with ``resample``."""
    c, d = ink.shape[:2]
    if ink.shape[2:] == (image_size, image_size):
        out = ink
    else:
        resample = getattr(Image.Resampling, RESAMPLE[resample])
        out = np.stack(
            [
                np.asarray(Image.fromarray(img).resize((image_size, image_size), resample))
                for img in ink.reshape(-1, *ink.shape[2:])
            ]
        ).reshape(c, d, image_size, image_size)
    return out[..., None]


def _fingerprint(source: _SetSource) -> str:
    h = hashlib.sha256()
    if source.location.is_file():
        with open(source.location, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        for f in sorted(source.location.rglob("*.png")):
            st = f.stat()
            h.update(f"{f.relative_to(source.location)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def load_omniglot(
    path: str | None,
    image_size: int = 28,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    resample: str = "lanczos",
) -> OmniglotArrays:
    """Read, preprocess and cache Omniglot; later calls with the same source, size and filter read
    the cache."""
    if resample not in RESAMPLE:
        raise UserError(one_of("dataset.resample", resample, RESAMPLE))
    sources = find_sources(Path(path)) if path else download_with_tfds(data_dir)
    origin = ", ".join(f"{s.location} ({s.kind})" for s in sources) + ("" if path else " via TFDS")
    key = hashlib.sha256(
        repr(
            (CACHE_VERSION, image_size, RESAMPLE[resample], [(s.name, s.kind, _fingerprint(s)) for s in sources])
        ).encode()
    ).hexdigest()[:16]
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cache_file = cache / f"omniglot-{image_size}px-{key}.npz"

    def read(path: Path) -> OmniglotArrays:
        with np.load(path) as z:
            return OmniglotArrays(
                images=z["images"],
                sets=dict(zip(z["set_names"].tolist(), z["set_sizes"].tolist())),
                source=f"{origin} (cache {path})",
            )

    def build(tmp: Path) -> None:
        arrays, sets = [], {}
        drawers = None
        for s in sources:
            log.info("reading Omniglot %s from %s (%s)", s.name, s.location, s.kind)
            ink = READERS[s.kind](s.location)
            if drawers is not None and ink.shape[1] != drawers:
                raise UserError(f"{s.location} has {ink.shape[1]} drawers per character, other sets {drawers}")
            drawers = ink.shape[1]
            arrays.append(preprocess(ink, image_size, resample))
            sets[s.name] = ink.shape[0]
        images = np.concatenate(arrays)
        with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to the name
            np.savez(f, images=images, set_names=np.array(list(sets)), set_sizes=np.array(list(sets.values())))
        log.info("cached Omniglot %s (%d characters) in %s", images.shape, images.shape[0], cache_file)

    arrays = cached(cache_file, read, build, what="Omniglot cache")
    log.info("Omniglot: read %s", arrays.source)
    return arrays

"""Small class-per-folder image sets written as PNG, for dataset=image_folder and maml-adapt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def class_image(c: int, i: int, size: int, channels: int = 1) -> np.ndarray:
    """uint8 [size, size(, 3)]: class ``c`` is its brightness, image ``i`` a bright pixel's place,
    so a drawn image says which class and which file it came from."""
    img = np.full((size, size), 10 + 7 * c, np.uint8)
    img[i // size % size, i % size] = 255
    return np.repeat(img[..., None], 3, axis=-1) if channels == 3 else img


def write_classes(root: Path, counts: Sequence[int], size: int = 8, channels: int = 1, prefix: str = "class") -> Path:
    """``root/<prefix>NN/MM.png``: class NN with counts[NN] images."""
    for c, n in enumerate(counts):
        folder = Path(root) / f"{prefix}{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(class_image(c, i, size, channels)).save(folder / f"{i:02d}.png")
    return Path(root)


def write_splits(root: Path, classes: Sequence[int], per_class: int, size: int = 8) -> Path:
    """``root/{train,val,test}/classNN/``, with classes[i] classes in split i."""
    start = 0
    for split, n in zip(("train", "val", "test"), classes):
        for c in range(start, start + n):
            folder = Path(root) / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(class_image(c, i, size)).save(folder / f"{i:02d}.png")
        start += n
    return Path(root)


def write_bad_folders(root: Path) -> Path:
    """The broken folders of docs/reliability.md's image_folder rows."""
    root = Path(root)
    write_classes(root / "few", [3, 3, 1, 3, 3, 3])  # class02 holds one image
    write_classes(root / "empty_class", [3, 3, 3])
    (root / "empty_class" / "class03").mkdir()
    write_classes(root / "broken", [3, 3, 3, 3, 3, 3])
    (root / "broken" / "class01" / "03.png").write_bytes(b"this is not a png")
    write_classes(root / "mixed", [3, 3, 3, 3, 3])
    write_classes(root / "mixed_colour", [3], channels=3, prefix="colour")
    (root / "mixed_colour" / "colour00").rename(root / "mixed" / "colour05")
    (root / "mixed_colour").rmdir()
    return root


# --- files people have ------------------------------------------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header) with almost
    no data: Pillow's size check happens when it opens the file."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return Path(path)


def add_junk(root: Path) -> Path:
    """What a Mac, Windows, a NAS or a zip tool leaves in a class-per-folder set: each skipped."""
    root = Path(root)
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "__MACOSX" / "class00").mkdir(parents=True)
    (root / "__MACOSX" / "class00" / "._00.png").write_bytes(b"\0\5\26\7 AppleDouble")
    (root / ".hidden_class").mkdir()
    (root / "@eaDir").mkdir()
    for folder in sorted(p for p in root.iterdir() if p.name.startswith("class")):
        (folder / "._00.png").write_bytes(b"\0\5\26\7 AppleDouble")
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")
        (folder / "notes.txt").write_text("not an image\n")
    return root


def write_modes(folder: Path) -> dict[str, np.ndarray]:
    """Images in the modes people's files come in, each 4x4 and of one colour, with the RGB a
    reader must see: {file name: uint8 [3]}. 16-bit grey is scaled (not clipped) to 8 bits, and
    a transparent image is laid on white."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 40, 10] + [0] * 762)
    palette.save(folder / "palette.png")
    expected["palette.png"] = [200, 40, 10]
    palette.save(folder / "palette_transparent.png", transparency=1)  # index 1 is see-through
    expected["palette_transparent.png"] = [255, 255, 255]
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(folder / "grey16.png")
    expected["grey16.png"] = [156] * 3  # round(40000 / 257)
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=100)
    expected["cmyk.jpg"] = [255, 0, 0]
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(folder / "clear.png")
    expected["clear.png"] = [255, 255, 255]
    Image.new("RGBA", (4, 4), (10, 20, 30, 255)).save(folder / "opaque_rgba.png")
    expected["opaque_rgba.png"] = [10, 20, 30]
    Image.new("LA", (4, 4), (90, 255)).save(folder / "grey_alpha.png")
    expected["grey_alpha.png"] = [90] * 3
    Image.new("1", (4, 4), 1).save(folder / "bilevel.png")
    expected["bilevel.png"] = [255] * 3
    return {name: np.array(rgb, np.uint8) for name, rgb in expected.items()}


def latin1_name(folder: Path, name: bytes = b"caf\xe9.png") -> Path:
    """A file whose name is Latin-1, not UTF-8 (as old zips and Windows shares leave them)."""
    import os

    path = os.fsencode(str(folder)) + b"/" + name
    with open(path, "wb") as f:
        f.write(_png_bytes())
    return Path(os.fsdecode(path))


def _png_bytes() -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(class_image(0, 0, 8)).save(out, "PNG")
    return out.getvalue()


def write_hostile_folders(root: Path) -> Path:
    """The broken folders of docs/reliability.md's rows on files people have: each a 6-class set
    (3 images a class) with one defect in class01."""
    import os

    root = Path(root)

    def base(name: str) -> Path:
        return write_classes(root / name, [3] * 6) / "class01"

    (base("zero_byte") / "03.png").write_bytes(b"")
    good = (root / "zero_byte" / "class00" / "00.png").read_bytes()
    jpeg = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8))  # grey
    jpeg.save(base("cut_jpeg") / "03.jpg")
    data = (root / "cut_jpeg" / "class01" / "03.jpg").read_bytes()
    (root / "cut_jpeg" / "class01" / "03.jpg").write_bytes(data[: len(data) // 2])
    (base("cut_png") / "03.png").write_bytes(good[: len(good) // 2 + 10])
    png_header_only(base("bomb") / "03.png", 20000, 20000)  # 400 million pixels: over twice the limit
    png_header_only(base("big") / "03.png", 10000, 10000)  # 100 million: in Pillow's warning band
    os.symlink("03.png", base("link_loop") / "03.png")  # a link to itself
    os.symlink("../class09/00.png", base("dangling_link") / "03.png")
    latin1_name(base("latin1_file"))
    folder = write_classes(root / "latin1_class", [3] * 6)
    os.rename(folder / "class01", os.fsdecode(os.fsencode(str(folder)) + b"/cl\xe0sse01"))
    return root

"""How long listing a big image folder takes: what every start of a ``dataset=image_folder`` run
pays before it can use its cache (the listing, and the cache key made of every file's name, size
and modification time).

    python scripts/bench_listing.py                      # 100,000 files: 1,000 classes of 100
    python scripts/bench_listing.py --files 100000 --classes 1   # one folder of 100,000

The files are empty (the listing never opens them); they are written to a temporary folder on the
same disk as ``--dir`` (default: the system's temporary folder). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maml_cli.data.image_folder import cache_key, find_classes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "set"
        per_class = args.files // args.classes
        began = time.perf_counter()
        for c in range(args.classes):
            folder = root / f"class{c:05d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"{i:06d}.png").touch()
        written = time.perf_counter() - began
        timings = []
        for _ in range(3):  # the first pass reads the directories from disk, the later ones from the page cache
            began = time.perf_counter()
            classes = find_classes(root)[None]
            listed = time.perf_counter() - began
            cache_key("image_folder", classes, (84, 3, "lanczos", False))
            timings.append((listed, time.perf_counter() - began))
        print(
            json.dumps(
                {
                    "files": sum(len(f) for f in classes.values()),
                    "classes": len(classes),
                    "write_s": round(written, 1),
                    "list_s": [round(t[0], 2) for t in timings],
                    "list_and_key_s": [round(t[1], 2) for t in timings],
                    "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
                    "date": time.strftime("%Y-%m-%d"),
                }
            )
        )


if __name__ == "__main__":
    main()

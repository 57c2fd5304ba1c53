"""Two real image folders for trying degan on "your own folder": emoji faces and country flags.

Both come from the npm registry (the only thing fetched), as plain PNG folders like a user's own:

- ``emoji-faces``: the 109 Google Noto emoji of the "Smileys & Emotion" face subcategories except costumes
  (``emoji-datasource-google`` 15.1.2, 64x64 RGBA);
- ``flags``: the 258 Twitter Twemoji country flags (``emoji-datasource-twitter`` 15.1.2, 64x64 RGBA).

Usage::

    python scripts/example_folders.py [--dest examples]     # or: make example-folders

Needs ``npm`` (Debian: ``apt-get install npm``). Re-running reuses what is there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "15.1.2"
FOLDERS = {
    # name: (package, image set, keep(emoji record) -> bool)
    "emoji-faces": ("emoji-datasource-google", "google",
                    lambda e: e["category"] == "Smileys & Emotion" and e["subcategory"].startswith("face-")
                    and e["subcategory"] != "face-costume"),
    "flags": ("emoji-datasource-twitter", "twitter", lambda e: e["subcategory"] == "country-flag"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default="examples", help="where the folders go")
    args = ap.parse_args()
    dest = Path(args.dest)
    npm_dir = dest / ".npm"
    packages = sorted({pkg for pkg, _, _ in FOLDERS.values()})
    if not all((npm_dir / "node_modules" / p / "emoji.json").is_file() for p in packages):
        if shutil.which("npm") is None:
            print("npm not found; install it (Debian: apt-get install npm) and re-run", file=sys.stderr)
            return 1
        npm_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(npm_dir), "--no-audit", "--no-fund", "--silent",
                        *[f"{p}@{VERSION}" for p in packages]], check=True)
    for name, (pkg, image_set, keep) in FOLDERS.items():
        root = npm_dir / "node_modules" / pkg
        records = [e for e in json.loads((root / "emoji.json").read_text()) if keep(e) and e.get(f"has_img_{image_set}")]
        out = dest / name
        out.mkdir(parents=True, exist_ok=True)
        for e in records:
            src = root / "img" / image_set / "64" / e["image"]
            if src.is_file() and not (out / e["image"]).is_file():
                shutil.copyfile(src, out / e["image"])
        print(f"{out}: {sum(1 for _ in out.glob('*.png'))} PNGs ({pkg} {VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Names and paths of the processed layout, and the safe keys that stand for video ids on disk.

```
OUT/images/<shard>/<key>/NN.jpg     frames, stored once, one folder per video
OUT/stage1/{train,val}.jsonl        one QA per line
OUT/stage2/{train,val}.jsonl        one video per line, multi-turn
OUT/metadata.json                   written last: its presence means the output is complete
```
`<shard>` names the source shard a video came from (`train-00003`), so a folder holds one shard's
videos (a few thousand at most, whatever the dataset size), and two records that share an id can never
write to the same files. Every path stored in the JSONL files is relative to OUT and uses `/`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "val")
STAGES: tuple[str, ...] = ("stage1", "stage2")

IMAGES_DIR = "images"
METADATA_FILE = "metadata.json"
#: Working state of an unfinished extraction (parts, temporary files, lock); removed when it completes.
WORK_DIR = ".extract"

_SAFE_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}")
_UNSAFE_CHARS_RE = re.compile(r"[^A-Za-z0-9_.-]+")
_HASH_CHARS = 10
#: The tail every hashed key ends with (`-` and the hash); an id that already ends like this is hashed too.
_HASHED_TAIL_RE = re.compile(rf"-[0-9a-f]{{{_HASH_CHARS}}}\Z")


def safe_key(video_id: str) -> str:
    """A file-name-safe key for a video id: the id itself when it is already safe, else a cleaned-up form
    plus a hash of the original. Never empty, never `.`/`..`, no path separators: a key can only name
    one folder inside its parent.

    Distinct ids get distinct keys: a kept id never ends in `-` and 10 hex digits (one that does, e.g.
    `x_y-73dec5934a`, is hashed like an unsafe id), while every hashed key does, so a kept id can never
    equal the key of a hashed one (`x y` → `x_y-73dec5934a`); two hashed keys are equal only if both
    ids clean up alike and their sha1 agree on 40 bits, which extraction also checks (`prepare_record`)."""
    if _SAFE_KEY_RE.fullmatch(video_id) and ".." not in video_id and not _HASHED_TAIL_RE.search(video_id):
        return video_id
    cleaned = _UNSAFE_CHARS_RE.sub("_", video_id).replace("..", "_").strip("._-")[:64]
    digest = hashlib.sha1(video_id.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{cleaned}-{digest}" if cleaned else f"id-{digest}"


def shard_id(split: str, index: int) -> str:
    """The folder name for the `index`-th shard (in sorted order) of a split, e.g. `train-00003`."""
    return f"{split}-{index:05d}"


def frame_name(index: int) -> str:
    return f"{index:02d}.jpg"


def video_image_dir(shard: str, key: str) -> str:
    """Relative path of a video's frame folder."""
    return f"{IMAGES_DIR}/{shard}/{key}"


def frame_paths(image_dir: str, count: int) -> list[str]:
    """Relative paths of a video's frames, in frame order."""
    return [f"{image_dir}/{frame_name(i)}" for i in range(count)]


def stage_file(root: Path, stage: str, split: str) -> Path:
    return root / stage / f"{split}.jsonl"


def subset_fraction(video_id: str) -> float:
    """A stable number in [0, 1) per video id: `--subset-ratio R` keeps the videos below R, the same
    videos on every run and in both stages."""
    digest = hashlib.sha1(video_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64

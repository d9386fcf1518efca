"""Embed every video (and image) under a directory with a trained run, into an index that violet.search reads.

    python -m violet.index --checkpoint RUN --videos DIR --out INDEX [--add] [--batch-size 16] [--window-stride S]

INDEX is a directory:
    INDEX/index.json               the run (path + sha256 of its weights), DIR, the window settings, the parts
                                   (each with the paths it embeds, relative to DIR) and the files that failed
    INDEX/part-NNNNN.safetensors   {"embeddings": float32 [n, D]}, rows in the order of the part's paths

The index is written every few batches, part file first and index.json after it (both renamed into place), so a
killed run leaves a consistent index: the same command continues with the files not yet in it. `--add` indexes
the files added to DIR since. A file that cannot be read is reported, listed under "failures" and skipped; it is
tried again once its size or modification time changes.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from violet.data.decode import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from violet.engine.checkpointer import file_digest
from violet.engine.rundir import write_text

logger = logging.getLogger(__name__)
MANIFEST = "index.json"
FORMAT, VERSION = "violet-video-index", 1
FLUSH_EVERY = 4  # batches between writes: what a kill can cost, against rewriting index.json too often


class IndexError_(RuntimeError):  # noqa: N801 - IndexError is Python's
    """An index that cannot be used as asked (another run's, another directory's, already complete...)."""


def find_videos(root: Path) -> list[str]:
    """Paths relative to `root` (forward slashes, sorted) of every file with a video or image extension."""
    found, visited = [], set()
    for directory, subdirs, filenames in os.walk(root, followlinks=True):
        status = os.stat(directory)
        if (status.st_dev, status.st_ino) in visited:  # a symlink loop: walk each directory once
            subdirs[:], filenames = [], []
        visited.add((status.st_dev, status.st_ino))
        for filename in filenames:
            if os.path.splitext(filename)[1].lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS:
                found.append((Path(directory) / filename).relative_to(root).as_posix())
    return sorted(found)


def _stamp(path: Path) -> list[int] | None:
    """Size and modification time: a failed file is tried again once either changes."""
    try:
        status = path.stat()
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


@dataclass
class VideoIndex:
    """An index directory: its manifest, and the embeddings of its parts (read on demand)."""

    root: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> VideoIndex:
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise IndexError_(f"{root} is not a video index ({MANIFEST} is missing); "
                              "make one with python -m violet.index")
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise IndexError_(f"{path} is not a {FORMAT} version {VERSION} index")
        return cls(root, manifest)

    @property
    def paths(self) -> list[str]:
        return [path for part in self.manifest["parts"] for path in part["paths"]]

    @property
    def videos_dir(self) -> Path:
        return Path(self.manifest["videos_dir"])

    def embeddings(self) -> torch.Tensor:
        parts = [load_file(str(self.root / part["file"]))["embeddings"] for part in self.manifest["parts"]]
        return torch.cat(parts) if parts else torch.empty(0, self.manifest.get("dim") or 0)

    def add_part(self, paths: list[str], embeddings: torch.Tensor) -> None:
        """Write one part and the manifest naming it (a kill between the two leaves an unnamed part, ignored)."""
        name = f"part-{len(self.manifest['parts']):05d}.safetensors"
        partial = self.root / f".{name}.partial"
        save_file({"embeddings": embeddings.float().contiguous()}, str(partial))
        partial.replace(self.root / name)
        self.manifest["parts"].append({"file": name, "paths": paths})
        self.manifest["dim"] = int(embeddings.shape[1])
        self.save()

    def save(self) -> None:
        self.manifest["count"] = sum(len(part["paths"]) for part in self.manifest["parts"])
        write_text(self.root / MANIFEST, json.dumps(self.manifest, indent=1, ensure_ascii=False) + "\n")


def open_for_writing(out: Path, run: dict[str, str], videos_dir: Path, window: dict[str, Any],
                     add: bool) -> VideoIndex:
    """The index at `out` to continue or extend, or a new one; refuses another run's or directory's index."""
    if not (out / MANIFEST).exists():
        if out.exists() and any(out.iterdir()):
            raise IndexError_(f"{out} exists and is not a video index; choose an empty or new --out")
        out.mkdir(parents=True, exist_ok=True)
        index = VideoIndex(out, {"format": FORMAT, "version": VERSION, "run": run, "videos_dir": str(videos_dir),
                                 **window, "complete": False, "dim": None, "parts": [], "failures": []})
        index.save()
        return index
    index = VideoIndex.open(out)
    made_by = index.manifest["run"]
    if made_by["weights_sha256"] != run["weights_sha256"]:
        raise IndexError_(f"{out} was made by another run ({made_by['path']}); its embeddings cannot be mixed "
                          f"with {run['path']}'s: choose another --out")
    if index.manifest["videos_dir"] != str(videos_dir):
        raise IndexError_(f"{out} indexes {index.manifest['videos_dir']}, not {videos_dir}: choose another --out")
    for key, value in window.items():
        if index.manifest.get(key) != value:
            raise IndexError_(f"{out} was made with {key}={index.manifest.get(key)}, not {value}")
    if index.manifest["complete"] and not add:
        raise IndexError_(f"{out} already holds a complete index of {videos_dir}: pass --add to index the files "
                          "added since, or choose another --out")
    return index


def pending_files(index: VideoIndex, found: list[str]) -> list[str]:
    """Files not in the index, less those that failed before and have not changed since."""
    done = set(index.paths)
    failed = {failure["path"]: failure.get("stamp") for failure in index.manifest["failures"]}
    return [path for path in found if path not in done
            and (path not in failed or failed[path] != _stamp(index.videos_dir / path))]


def window_settings(model: Any, out: Path, stride: float | None) -> dict[str, float | None]:
    """Stride and window length in seconds (None: whole videos); an index being continued keeps its own."""
    if stride is None and (out / MANIFEST).is_file():
        made = VideoIndex.open(out).manifest
        return {"window_stride": made.get("window_stride"), "window_seconds": made.get("window_seconds")}
    return {"window_stride": stride, "window_seconds": None if stride is None else model.window_length(stride, None)}


def build_index(model: Any, videos_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, add: bool = False,
                batch_size: int = 16, window_stride: float | None = None, flush_every: int = FLUSH_EVERY,
                progress: bool = False) -> dict[str, Any]:
    """Embed the files of `videos_dir` not yet in the index at `out` with `model` (a violet.api.TrainedModel).
    Returns {"indexed", "failed", "total", "failures"}: this call's counts, and the index's size."""
    from violet.api import VideoFileError

    videos_dir = Path(videos_dir).resolve()
    if not videos_dir.is_dir():
        raise IndexError_(f"--videos {videos_dir} is not a directory")
    run = {"path": str(model.run.path.resolve()), "weights_sha256": file_digest(model.run.weights_path)}
    window = window_settings(model, Path(out), window_stride)
    index = open_for_writing(Path(out), run, videos_dir, window, add)
    index.manifest["complete"] = False
    todo = pending_files(index, find_videos(videos_dir))
    failures = {failure["path"]: failure for failure in index.manifest["failures"]}
    done_paths: list[str] = []
    done_embeds: list[torch.Tensor] = []
    counts = {"indexed": 0, "failed": 0}

    def flush() -> None:
        if done_paths:
            index.add_part(list(done_paths), torch.cat(done_embeds))
            done_paths.clear()
            done_embeds.clear()
        index.manifest["failures"] = sorted(failures.values(), key=lambda failure: failure["path"])
        index.save()

    bar = tqdm(total=len(todo), unit="video", desc="indexing", disable=not progress, dynamic_ncols=True)
    files = [videos_dir / path for path in todo]
    try:
        for number, results in enumerate(model.embed_in_chunks(files, batch_size, batch_size, **window), start=1):
            chunk = todo[(number - 1) * batch_size:number * batch_size]
            good = [(path, embed) for path, embed in zip(chunk, results) if not isinstance(embed, VideoFileError)]
            for path, result in zip(chunk, results):
                if isinstance(result, VideoFileError):
                    logger.warning("skipped %s", result)
                    failures[path] = {"path": path, "reason": result.reason, "stamp": _stamp(videos_dir / path)}
                else:
                    failures.pop(path, None)
            if good:
                done_embeds.append(torch.stack([embed for _, embed in good]))
                done_paths.extend(path for path, _ in good)
            counts["indexed"] += len(good)
            counts["failed"] += len(chunk) - len(good)
            bar.update(len(chunk))
            bar.set_postfix(failed=counts["failed"], refresh=False)
            if number % flush_every == 0:
                flush()
        index.manifest["complete"] = True
    finally:  # also on a kill by KeyboardInterrupt or an error: what was embedded is kept
        bar.close()
        flush()
    return {**counts, "total": index.manifest["count"], "failures": index.manifest["failures"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m violet.index", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a run directory of train.py")
    parser.add_argument("--videos", required=True, type=Path, help="directory of videos/images (searched recursively)")
    parser.add_argument("--out", required=True, type=Path, help="index directory (created, continued or extended)")
    parser.add_argument("--add", action="store_true", help="index the files not yet in a complete index")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per model call (default 16)")
    parser.add_argument("--window-stride", type=float, default=None,
                        help="seconds between windows of the trained clip length cut from long videos (default: "
                             "one clip over each whole video, as evaluation does; an existing index's setting)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.batch_size < 1 or (args.window_stride is not None and args.window_stride <= 0):
        print("error: --batch-size and --window-stride must be > 0", file=sys.stderr)
        return 2
    # Imported after parsing: --help and usage errors need none of the model code.
    from violet.api import load
    from violet.engine.rundir import RunDirError

    try:
        model = load(args.checkpoint, args.device)
        with logging_redirect_tqdm():  # a skipped file's warning must not break the progress bar
            summary = build_index(model, args.videos, args.out, add=args.add, batch_size=args.batch_size,
                                  window_stride=args.window_stride,
                                  progress=not args.quiet and sys.stderr.isatty())
    except (IndexError_, RunDirError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: what was embedded is in {args.out}; run the same command again to continue",
              file=sys.stderr)
        return 130
    print(f"indexed {summary['indexed']} files, {summary['failed']} failed; {args.out} holds {summary['total']}")
    for failure in summary["failures"]:
        print(f"  failed: {failure['path']}: {failure['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The bundle manifest: its schema version, reading and validating it, and file hashing. The runtime owns this
format (it is the consumer); export/ writes it through these same functions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import BundleError

FORMAT = "adafv-bundle"
FORMAT_VERSION = 2  # 2: uint8 pixels into the vision graph, a build target, a pruned LM head
MANIFEST = "manifest.json"
REQUIRED = (
    "format",
    "format_version",
    "model",
    "target",
    "selection",
    "vision",
    "preprocess",
    "prompt",
    "llm",
    "files",
)


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {size, sha256}} for every file under root except the manifest itself."""
    table = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        table[path.relative_to(root).as_posix()] = {"size": path.stat().st_size, "sha256": sha256(path)}
    return table


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write manifest.json (the last file of a bundle: a directory without it never loads)."""
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.replace(root / MANIFEST)


def read_manifest(root: str | Path) -> dict[str, Any]:
    """Read and check the manifest's format; raises BundleError naming what is wrong."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle directory not found: {root}")
    if not path.is_file():
        raise BundleError(f"{root} is not a bundle: {MANIFEST} is missing (an interrupted build leaves none)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is corrupt: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is not an adafv bundle manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{root} was written in bundle format {version}; this adafv reads format {FORMAT_VERSION}: "
            "rebuild it with `adafv engine ... --force`"
        )
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)}")
    return manifest


def verify_files(root: Path, manifest: dict[str, Any], hashes: bool = True) -> None:
    """Every listed file exists with its size (and, with hashes=True, its sha256)."""
    for rel, meta in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"{root}: {rel} is missing")
        if path.stat().st_size != meta["size"]:
            raise BundleError(f"{root}: {rel} has {path.stat().st_size} bytes, the manifest says {meta['size']}")
        if hashes and sha256(path) != meta["sha256"]:
            raise BundleError(f"{root}: {rel} is corrupt (sha256 differs from the manifest)")

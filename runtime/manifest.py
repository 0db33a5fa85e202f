"""The bundle manifest: its schema version, reading and validating it, and file hashing. The runtime owns this
format (it is the consumer); export/ writes it through these same functions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import BundleError

FORMAT = "adafv-bundle"
FORMAT_VERSION = 4  # 2: uint8 pixels, a build target, a pruned LM head; 3: the layout (rows + image_newline);
# 4: the graph's second output is kept_order (reading order), named apart from the answers' ascending kept_positions
MANIFEST = "manifest.json"
DIGEST = "manifest_sha256"  # covers every other field: an edited manifest is refused, not trusted
# nested fields the runtime reads, with their types: a manifest without one is refused with its name
SCHEMA = {
    "model.name": str,
    "requires.onnxruntime": str,
    "selection.keep": int,
    "selection.method": str,
    "selection.mode": str,
    "vision.files.fp32": str,
    "vision.inputs": dict,
    "vision.outputs": dict,
    "vision.crops": list,
    "vision.max_text": int,
    "vision.patches_per_crop": int,
    "vision.hidden_size": int,
    "preprocess.kind": str,
    "prompt.before": str,
    "prompt.after": str,
    "prompt.image_token": str,
    "prompt.image_token_id": int,
    "tokenizer.dir": str,
    "tokenizer.eos_token_ids": list,
    "embed.file": str,
    "layout.kind": str,
    "llm.dir": str,
    "llm.file": str,
    "llm.num_layers": int,
    "llm.num_kv_heads": int,
    "llm.head_size": int,
    "llm.max_length": int,
    "llm.inputs": dict,
    "llm.outputs": dict,
}
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


def is_bundle(path) -> bool:
    """Whether `path` is a bundle folder (it holds a manifest); the one test everything uses."""
    try:
        return (Path(path) / MANIFEST).is_file()
    except (OSError, ValueError, TypeError):
        return False


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


def digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, without the digest field itself."""
    body = {k: v for k, v in manifest.items() if k != DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(root: Path, manifest: dict[str, Any], check: bool = True) -> dict[str, Any]:
    """Write manifest.json with its digest (the last file of a bundle: a directory without it never loads); returns
    the manifest as written."""
    body = {k: v for k, v in manifest.items() if k != DIGEST}
    if check:  # the writer keeps the reader's schema: a build cannot write what will not load
        if body.get("format") != FORMAT or body.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"a manifest to write must say format {FORMAT!r} version {FORMAT_VERSION}")
        validate(body, root / MANIFEST)
    manifest = {**body, DIGEST: digest(body)}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.replace(root / MANIFEST)
    return manifest


def hidden_siblings(root: Path) -> list[tuple[Path, int]]:
    """The folders builds of `root` write beside it, `.<name>.partial-<pid>` and `.<name>.old-<pid>`, with the pid."""
    found = []
    if not root.parent.is_dir():
        return found
    for path in root.parent.glob(f".{root.name}.*-*"):
        kind, _, pid = path.name[len(root.name) + 2 :].partition("-")
        if kind in ("partial", "old") and pid.isdigit() and path.is_dir():
            found.append((path, int(pid)))
    return found


def read_manifest(root: str | Path) -> dict[str, Any]:
    """Read and check the manifest's format; raises BundleError naming what is wrong."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        complete = [p for p, _ in hidden_siblings(root) if (p / MANIFEST).is_file()]
        if complete:  # a build died while swapping the new bundle in: both bundles are there, hidden
            names = " or ".join(str(p) for p in sorted(complete))
            raise BundleError(
                f"bundle directory not found: {root}; a build was interrupted while replacing it, and a complete "
                f"bundle survives at {names}: rename it to {root.name} (or rebuild)"
            )
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
    if manifest.get(DIGEST) != digest(manifest):
        raise BundleError(
            f"{path} was edited or damaged (its checksum does not match its contents); a manifest is written by "
            "the build and describes the graphs it built: rebuild with `adafv engine ... --force`"
        )
    validate(manifest, path)
    return manifest


def validate(manifest: dict[str, Any], path: Path | str = MANIFEST) -> None:
    """The schema, one place for the writer and the reader: every field the runtime reads, with its type, and the
    structure the types alone do not say. A BundleError names the first field that is wrong."""
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)}")
    for dotted, kind in SCHEMA.items():
        value: Any = manifest
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BundleError(f"{path}: the field {dotted} is missing or not a {kind.__name__}")
    _check_structure(path, manifest)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_structure(path: Path, m: dict[str, Any]) -> None:
    """What the field types alone do not say: the file table's entries, the crop range, the token ids. A manifest
    re-signed with other values is refused here in one line, never an AttributeError later."""
    files = m["files"]
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{path}: the field files must list the bundle's files (an object of path -> size, sha256)")
    for rel, meta in files.items():
        if (not isinstance(rel, str) or rel.startswith("/") or ".." in Path(rel).parts or not isinstance(meta, dict)
                or not _is_int(meta.get("size")) or meta["size"] < 0 or not isinstance(meta.get("sha256"), str)):
            raise BundleError(f"{path}: files[{rel!r:.60}] is not a relative path with its size and sha256")
    crops = m["vision"]["crops"]
    if len(crops) != 2 or not all(_is_int(c) for c in crops) or not 1 <= crops[0] <= crops[1]:
        raise BundleError(f"{path}: vision.crops must be [lowest, highest] crop counts, got {crops!r:.60}")
    eos = m["tokenizer"]["eos_token_ids"]
    if not all(_is_int(t) and t >= 0 for t in eos):
        raise BundleError(f"{path}: tokenizer.eos_token_ids must be token ids, got {eos!r:.60}")
    for dotted in ("selection.keep", "vision.max_text", "vision.patches_per_crop", "vision.hidden_size",
                   "llm.num_layers", "llm.num_kv_heads", "llm.head_size", "llm.max_length"):  # fmt: skip
        section, key = dotted.split(".")
        if m[section][key] < 1:
            raise BundleError(f"{path}: {dotted} must be positive, got {m[section][key]}")
    for dotted in ("vision.files.fp32", "embed.file", "tokenizer.dir", "llm.dir", "llm.file"):
        section, *keys = dotted.split(".")
        value = m[section]
        for key in keys:
            value = value[key]
        if Path(value).is_absolute() or ".." in Path(value).parts:
            raise BundleError(f"{path}: {dotted} must name a file inside the bundle, got {value!r:.60}")


def snapshot(root: Path, manifest: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime in ns) of every listed file: what `changed_since` compares with."""
    out = {}
    for rel in manifest["files"]:
        st = (root / rel).stat()
        out[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def changed_since(root: Path, before: dict[str, tuple[int, int, int]]) -> str | None:
    """The first listed file replaced, rewritten or removed since `snapshot`, or None."""
    for rel, facts in before.items():
        try:
            st = (root / rel).stat()
        except OSError:
            return rel
        if (st.st_ino, st.st_size, st.st_mtime_ns) != facts:
            return rel
    return None


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

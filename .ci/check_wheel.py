"""Every module and data file of the folders setup.py maps must be inside the wheel, under its package path."""

import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]
DATA = {"assets": ("*.jpg", "*.png"), "checkpoints": ("*/*",), "calib": ("data/*.jsonl", "data/images/*")}


def folders() -> dict[str, str]:
    text = (ROOT / "setup.py").read_text()
    block = text[text.index("FOLDERS = {") : text.index("}", text.index("FOLDERS = {")) + 1]
    return eval(block.split("=", 1)[1])  # the literal dict of setup.py


def main(wheel: str) -> int:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = []
    for package, folder in folders().items():
        prefix = package.replace(".", "/")
        files = [p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts]
        for pattern in DATA.get(folder, ()):
            files += [p for p in (ROOT / folder).glob(pattern) if p.is_file()]
        for path in files:
            inside = f"{prefix}/{path.relative_to(ROOT / folder).as_posix()}"
            if inside not in names:
                missing.append(inside)
    if missing:
        print("the wheel lacks:\n  " + "\n  ".join(sorted(missing)))
        return 1
    print(f"wheel complete: {len(names)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""The runtime's footprint, measured in the environment it runs in: what the README states about size, import time,
load time and memory comes from this command, run in a runtime-only install (the wheel plus one ONNX Runtime).

    python -m adafv.eval.footprint BUNDLE [--extra cpu] [--image IMAGE] [--json]

* installed size: every file of adafv and of the distributions its base requirements (and the extra) pull in,
  transitively, as installed here (`importlib.metadata`), largest first;
* `import adafv.runtime`: a fresh interpreter, minus an empty one (median of 5);
* load + answer: a fresh interpreter loads the bundle and answers one question (8 new tokens): wall time and peak
  RSS, and which of torch / transformers got imported (none may).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from importlib import metadata

# Peak RSS from /proc's VmHWM, which starts afresh at exec: ru_maxrss would also count the parent's pages that the
# fork copied in before the exec (a parent holding torch shows up as 500 MB in a child that never imports it).
ANSWER = """
import json, resource, sys, time
start = time.perf_counter()
from adafv.runtime import Pipeline, load_image
pipe = Pipeline.load(sys.argv[1])
result = pipe.run(load_image(sys.argv[2]), "What is in the picture?", max_new_tokens=8)
seconds = time.perf_counter() - start
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
try:
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    rss = int(status.split()[0]) / 1024
except (OSError, IndexError):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rss_mb": rss, "heavy_imports": heavy, "tokens": len(result["tokens"])}))
"""


def _name(requirement: str) -> tuple[str, str | None]:
    """'onnxruntime>=1.24; extra == "cpu"' -> ('onnxruntime', 'cpu'); the extra a requirement belongs to, if any."""
    name = re.split(r"[ ;<>=!~\[(]", requirement.strip(), maxsplit=1)[0]
    extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
    return name.lower().replace("_", "-"), extra.group(1) if extra else None


def closure(root: str = "adafv", extras: tuple[str, ...] = ()) -> dict[str, int]:
    """{distribution: installed bytes} of `root` and everything its requirements (and `extras`) pull in."""
    sizes: dict[str, int] = {}
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        if name in sizes:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment does not have
        sizes[name] = sum(f.size or 0 for f in dist.files or [])
        for requirement in dist.requires or []:
            dep, extra = _name(requirement)
            if extra is None or extra in wanted:
                if "platform_system" in requirement and "Windows" in requirement:
                    continue
                todo.append((dep, ()))
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


def import_seconds(repeats: int = 5) -> float:
    def run(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - start

    empty = statistics.median(run("pass") for _ in range(repeats))
    return max(statistics.median(run("import adafv.runtime") for _ in range(repeats)) - empty, 0.0)


def measure(bundle: str, image: str, extras: tuple[str, ...]) -> dict:
    sizes = closure("adafv", extras)
    proc = subprocess.run([sys.executable, "-c", ANSWER, bundle, image], capture_output=True, text=True, check=True)
    return {
        "python": sys.version.split()[0],
        "installed_mb": round(sum(sizes.values()) / 1e6, 1),
        "distributions_mb": {k: round(v / 1e6, 1) for k, v in sizes.items()},
        "import_runtime_s": round(import_seconds(), 3),
        "load_and_answer": json.loads(proc.stdout.strip().splitlines()[-1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adafv.eval.footprint", description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--extra", action="append", default=[], help="extras whose requirements count (e.g. cpu)")
    parser.add_argument("--image", default=None, help="default: the shipped rocket.jpg")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from adafv.assets import path

    r = measure(args.bundle, args.image or str(path("rocket.jpg")), tuple(args.extra))
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    top = ", ".join(f"{k} {v}" for k, v in list(r["distributions_mb"].items())[:6])
    a = r["load_and_answer"]
    print(f"installed: {r['installed_mb']} MB ({len(r['distributions_mb'])} distributions; largest: {top})")
    print(f"import adafv.runtime: {r['import_runtime_s']:.2f} s (Python {r['python']})")
    print(f"load the bundle and answer ({a['tokens']} tokens): {a['seconds']:.2f} s, peak RSS {a['rss_mb']:.0f} MB")
    print(f"torch / transformers imported: {a['heavy_imports'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks every build ends with: TensorRT readiness of the ONNX graph (without TensorRT) and parity of the graph in
ONNX Runtime against the PyTorch module. A failed check raises a typed error that lists what differs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from adafv.calib.regions import in_selection
from adafv.config import TOPK_LIMIT as TOPK_K_LIMIT
from adafv.runtime.contract import OUTPUTS, TOLERANCES

from .errors import BuildError
from .trt_ops import CONSTANT_INPUTS, DATA_DEPENDENT_SHAPE_OPS, SUPPORTED

# their math stays float32
FLOAT32_OPS = frozenset({"CumSum", "Softmax", "ReduceL2", "TopK", "ReduceMax", "ReduceMin", "ArgMax", "Div"})

_ELEM = {1: "f32", 2: "u8", 3: "i8", 6: "i32", 7: "i64", 9: "bool", 10: "f16", 11: "f64", 16: "bf16"}


class LintError(BuildError):
    """The graph uses something TensorRT's ONNX parser does not accept (or the selection left float32)."""


class ParityError(BuildError):
    """The exported graph does not reproduce the PyTorch module."""


@dataclasses.dataclass
class LintReport:
    ops: dict[str, int]
    topk: list[tuple[str, int]]  # (node, K)
    selection_nodes: int
    problems: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)  # checks that could not run, and why

    @property
    def ok(self) -> bool:
        return not self.problems


def _constants(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = attr.t
    return {k: numpy_helper.to_array(v) for k, v in values.items() if not v.external_data}


def trt_lint(path: Path) -> LintReport:
    """Every op in TensorRT's ONNX support with a supported type; constant-K TopK (K < 3840, sorted=1); constant
    axes; no data-dependent shapes; static outputs; the selection math in float32."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]  # infer every type afresh rather than trust what a converter declared
    try:
        inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True)
    except onnx.shape_inference.InferenceError as e:
        raise LintError(f"{path.name}: ONNX type/shape inference fails: {e}") from e
    types = {}
    for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        types[v.name] = _ELEM.get(v.type.tensor_type.elem_type, "?")
    for t in model.graph.initializer:
        types[t.name] = _ELEM.get(t.data_type, "?")
    constants = _constants(model)
    problems: list[str] = []
    topk: list[tuple[str, int]] = []
    selection = 0
    for node in model.graph.node:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.name}: custom-domain op {node.domain}::{op}")
            continue
        if op in DATA_DEPENDENT_SHAPE_OPS:
            problems.append(f"{node.name}: {op} has a data-dependent output shape")
        if op not in SUPPORTED:
            problems.append(f"{node.name}: {op} is not in TensorRT's ONNX operator support")
            continue
        data = node.input[1] if op == "Where" else node.input[0] if node.input else ""
        kind = types.get(data)
        if op != "Cast" and any(types.get(i) == "u8" for i in node.input):
            problems.append(f"{node.name}: {op} on u8 (TensorRT takes uint8 only into a Cast to float)")
        if op == "Cast" and kind == "u8":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to not in (1, 10):
                problems.append(
                    f"{node.name}: Cast from u8 to {_ELEM.get(to, to)} (TensorRT casts uint8 to float only)"
                )
        if kind and kind != "?" and kind not in SUPPORTED[op].split():
            problems.append(f"{node.name}: {op} on {kind} (TensorRT accepts {SUPPORTED[op]})")
        index = CONSTANT_INPUTS.get(op)
        if index is not None and len(node.input) > index and node.input[index] and node.input[index] not in constants:
            problems.append(f"{node.name}: {op} input {index} ({node.input[index]}) must be a constant")
        if op == "TopK":
            attrs = {a.name: a for a in node.attribute}
            if "sorted" in attrs and attrs["sorted"].i != 1:
                problems.append(f"{node.name}: TopK with sorted=0 (TensorRT needs sorted=1)")
            if node.input[1] in constants:
                k = int(np.asarray(constants[node.input[1]]).reshape(-1)[0])
                topk.append((node.name, k))
                if k >= TOPK_K_LIMIT:
                    problems.append(f"{node.name}: TopK K={k} (TensorRT needs K < {TOPK_K_LIMIT})")
        if in_selection(node):
            selection += 1
            if op in FLOAT32_OPS and kind not in ("f32", "i64", "i32", "bool", None, "?"):
                problems.append(f"{node.name}: selection op {op} runs in {kind}, not float32")
    for out in model.graph.output:
        dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        if any(isinstance(d, str) or d <= 0 for d in dims):
            problems.append(f"output {out.name} has a non-static shape {dims}")
    ops = Counter(n.op_type for n in model.graph.node)
    return LintReport(dict(sorted(ops.items())), topk, selection, problems)


POLYGRAPHY = "import sys; from polygraphy.tools import main; sys.argv[0] = 'polygraphy'; sys.exit(main())"


PROTOBUF_LIMIT = 2**31 - 2**26  # bytes: one protobuf message holds less than 2 GB (a margin for the structure)


def polygraphy_lint(path: Path) -> tuple[bool, str]:
    """`polygraphy check lint` (ONNX checker + ONNX Runtime), run with this interpreter (its console script need not
    sit beside it); returns (passed, its report). LintError when polygraphy is not installed."""
    import importlib.util
    import tempfile

    if importlib.util.find_spec("polygraphy") is None:
        raise LintError("polygraphy is not installed: pip install polygraphy (part of adafv[export])")
    # a graph whose weights pass protobuf's 2 GB cannot be held as one message: polygraphy's lint fails to serialize
    # it ("Failed to serialize proto"), and without the weights its ONNX Runtime pass cannot run; our own TensorRT
    # lint (trt_lint) covers the structure and the parity step runs the real graph in ONNX Runtime
    weights = sum(p.stat().st_size for p in (path, path.with_name(path.name + ".data")) if p.exists())
    if weights > PROTOBUF_LIMIT:
        return True, (f"not run: {path.name} holds {weights / 2**30:.1f} GiB, over protobuf's 2 GB, which polygraphy "
                      "check lint cannot load; trt_lint and ONNX Runtime parity check it instead")  # fmt: skip
    extra: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "lint.json"
        proc = subprocess.run(
            [sys.executable, "-c", POLYGRAPHY, "check", "lint", str(path), "-o", str(report), *extra],
            capture_output=True,
            text=True,
        )
        text = report.read_text() if report.exists() else proc.stdout + proc.stderr
    return proc.returncode == 0, text


@dataclasses.dataclass
class ParityCase:
    name: str
    feeds: dict[str, np.ndarray]
    expected: tuple[np.ndarray, np.ndarray]  # kept_tokens, kept_order from PyTorch


def overlap(got: np.ndarray, want: np.ndarray) -> float:
    """Share of the wanted kept positions (a multiset: paper mode repeats some) that `got` also keeps; -1 = padding."""
    from collections import Counter

    a, b = Counter(got[got >= 0].tolist()), Counter(want[want >= 0].tolist())
    return sum((a & b).values()) / max(sum(b.values()), 1)


def check_parity(session, cases: list[ParityCase], atol: float = TOLERANCES.tokens_atol) -> dict:
    """Run each case through an ONNX Runtime session; positions must be identical and tokens within atol. No case
    at all proves nothing: a ParityError too."""
    if not cases:
        raise ParityError("no parity probe fits this graph (crop range, --max-text): nothing was compared")
    failures, worst = [], 0.0
    for case in cases:
        tokens, positions = session.run(list(OUTPUTS), case.feeds)
        want_tokens, want_positions = case.expected
        same = np.array_equal(positions, want_positions)
        diff = float(np.abs(tokens - want_tokens).max()) if tokens.size else 0.0
        worst = max(worst, diff)
        if not same or diff > atol:
            verdict = "identical" if same else f"differ ({overlap(positions, want_positions):.0%} shared)"
            failures.append(f"{case.name}: kept_order {verdict}; kept_tokens max |diff| {diff:.3g} (atol {atol:g})")
    if failures:
        raise ParityError("ONNX Runtime does not reproduce PyTorch:\n  " + "\n  ".join(failures))
    return {
        "cases": len(cases),
        "probes": [c.name for c in cases],
        "positions": "identical",
        "max_token_abs_diff": worst,
        "atol": atol,
    }

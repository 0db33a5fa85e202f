"""`adafv show`: which visual tokens were kept, drawn on the views the model sees.

    adafv show BUNDLE|MODEL --image I --prompt P --out kept.png [--methods adafv,fastervlm,dart] [--keep K]

Each row of the sheet is one method: the base view (the whole image at the tower's resolution) and the stitched
high-resolution grid, with every kept patch in colour and the rest dimmed. On a model (the PyTorch reference path)
AdaFV's kept patches are coloured by the cue whose candidate list they came from: saliency (the [CLS] attention's
per-crop top patches), relevance (the question's top patches over all crops), or both; VisionZip's dominant patches
are saliency's colour and its contextual tokens (each a merge of similar patches, drawn at its target's place) have
their own. A bundle answers with positions only, so its kept patches have one colour; a bundle draws its own method
and keep.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"saliency": (255, 140, 0), "relevance": (30, 144, 255), "both": (220, 0, 220), "merged": (255, 230, 0),
           "kept": (40, 200, 80)}
DIM = 0.25


def views(pixels: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 crops (N, 3, S, S) -> the base view (S, S, 3) and the stitched grid (rows*S, cols*S, 3) or None."""
    crops = pixels.transpose(0, 2, 3, 1)  # (N, S, S, 3)
    if crops.shape[0] == 1:
        return crops[0], None
    rows, cols = grid
    S = crops.shape[1]
    canvas = np.zeros((rows * S, cols * S, 3), np.uint8)
    for t in range(rows * cols):
        r, c = divmod(t, cols)
        canvas[r * S : (r + 1) * S, c * S : (c + 1) * S] = crops[1 + t]
    return crops[0], canvas


def paint(base: np.ndarray, canvas: np.ndarray | None, cues: dict[int, str], side, cols: int):
    """Kept patches as they are, framed in their cue's colour; the others dimmed. Returns PIL images (base, grid).
    `side`: patches per side of a square crop, or (rows, cols) of a one-image grid (Qwen's merged grid)."""
    from PIL import Image

    rows_, cols_ = (side, side) if isinstance(side, int) else side
    P = rows_ * cols_
    patch, patch_w = base.shape[0] // rows_, base.shape[1] // cols_
    out = [base.astype(np.float32) * DIM, None if canvas is None else canvas.astype(np.float32) * DIM]
    sources = [base, canvas]
    for position, cue in cues.items():
        crop, p = divmod(position, P)
        r, c = divmod(p, cols_)
        if crop == 0:
            target, y, x = 0, r * patch, c * patch_w
        else:
            tr, tc = divmod(crop - 1, cols)
            target, y, x = 1, (tr * rows_ + r) * patch, (tc * cols_ + c) * patch_w
        if out[target] is None:
            continue
        region = out[target][y : y + patch, x : x + patch_w]
        region[:] = sources[target][y : y + patch, x : x + patch_w]  # kept: the pixels as they are ...
        w = max(1, patch // 7)
        colour = np.array(COLOURS[cue], np.float32)
        region[:w], region[-w:], region[:, :w], region[:, -w:] = colour, colour, colour, colour  # ... framed
    return [None if a is None else Image.fromarray(a.clip(0, 255).astype(np.uint8)) for a in out]


def sheet(rows: list[tuple[str, object, object]], legend: list[str]):
    """Rows of (label, base view, grid) -> one PIL image with labels and a colour legend."""
    from PIL import Image, ImageDraw

    pad, label_h = 8, 18
    height = max(b.height for _, b, _ in rows)
    width = max(b.width + pad + (g.width if g is not None else 0) for _, b, g in rows)
    scale = 256 / height  # a readable height per row
    scaled = []
    for label, b, g in rows:
        b2 = b.resize((round(b.width * scale), round(b.height * scale)))
        g2 = None if g is None else g.resize((round(g.width * scale), round(g.height * scale)))
        scaled.append((label, b2, g2))
    W = max(b.width + pad + (g.width if g is not None else 0) for _, b, g in scaled) + 2 * pad
    H = sum(label_h + b.height + pad for _, b, _ in scaled) + label_h + 2 * pad
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    y = pad
    for label, b, g in scaled:
        draw.text((pad, y), label, fill=(0, 0, 0))
        y += label_h
        img.paste(b, (pad, y))
        if g is not None:
            img.paste(g, (pad + b.width + pad, y))
        y += b.height + pad
    x = pad
    for name in legend:
        draw.rectangle([x, y + 3, x + 12, y + 15], fill=COLOURS[name])
        draw.text((x + 16, y + 2), name, fill=(0, 0, 0))
        x += 110
    del width
    return img


MARK = "adafv show"  # the sheet's metadata (PNG Software text, JPEG comment): a file show may replace
SUFFIXES = (".png", ".jpg", ".jpeg")


def check_out(out: Path, image_path, force: bool = False) -> Path:
    """`--out` before any work: a .png/.jpg file, not the input photo, not a file show did not write (unless
    `force`)."""
    from .outputs import check_output

    return check_output(out, command="adafv show", inputs=[image_path], suffixes=SUFFIXES, ours=is_sheet, force=force)


def is_sheet(path: Path) -> bool:
    """Whether `path` is a sheet `adafv show` wrote (its mark in the metadata)."""
    from PIL import Image

    with Image.open(path) as im:
        comment = im.info.get("comment", b"")
        comment = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else str(comment)
        return im.info.get("Software") == MARK or comment == MARK


def save_sheet(image, out: Path) -> None:
    """Write the sheet with its mark, atomically."""
    from PIL.PngImagePlugin import PngInfo

    from .outputs import write_atomic

    def write(tmp: Path) -> None:
        if out.suffix.lower() == ".png":
            info = PngInfo()
            info.add_text("Software", MARK)
            image.save(tmp, format="PNG", pnginfo=info)
        else:
            image.save(tmp, format="JPEG", quality=92, comment=MARK)

    write_atomic(out, write)


def show(model: str, image_path: str, prompt: str, out: Path, methods: list[str], keep: int | None,
         force: bool = False) -> dict:  # fmt: skip
    """Draw the sheet; returns {method: number of kept tokens}. `out` follows eval.outputs' rule: never the input,
    never a file show did not write unless `force`."""
    from adafv.runtime import load_image
    from adafv.runtime.preprocess import preprocess

    out = check_out(Path(out), image_path, force)
    image = load_image(image_path)
    rows, kept = [], {}
    from adafv.runtime.manifest import is_bundle

    if is_bundle(model):
        from adafv.runtime import Pipeline

        pipe = Pipeline.load(model, warmup=False)
        spec = pipe.manifest["preprocess"]
        pixels, grid = preprocess(image, spec)
        _, post = pipe.prompt_ids(prompt)
        _, positions = pipe.vision(pixels, pipe.embed(post), grid)
        merged = pipe.manifest["vision"].get("merged_grid")  # Qwen: the cells of one image
        side = tuple(merged) if merged else int(round(pipe.manifest["vision"]["patches_per_crop"] ** 0.5))
        cues = {int(p): "kept" for p in positions if p >= 0}
        sel = pipe.manifest["selection"]
        base, canvas = views(pixels, grid)
        total = pixels.shape[0] * pipe.manifest["vision"]["patches_per_crop"]
        rows.append((f"{sel['method']}, keep {sel['keep']} of {total} (bundle)",
                     *paint(base, canvas, cues, side, grid[1])))  # fmt: skip
        kept[sel["method"]] = len(cues)
        legend = ["kept"]
    else:
        rows, kept, legend = _reference_rows(model, image, prompt, methods, keep)
    save_sheet(sheet(rows, legend), out)
    return kept


def _reference_rows(model: str, image, prompt: str, methods: list[str], keep: int | None):
    import torch

    from adafv import methods as registry
    from adafv.baselines import fastervlm_positions, visionzip
    from adafv.export.preprocess_spec import image_processor_spec
    from adafv.ops import largest
    from adafv.pipeline import Reference
    from adafv.runtime.preprocess import preprocess

    reference = Reference.load(model)
    analysis = reference.analyse(image, prompt)  # the tower once, for every method
    tokens, saliency, relevance = analysis.tokens, analysis.saliency, analysis.relevance  # (N, P, D), (N, P), (N*P,)
    N, P, D = tokens.shape
    prepared = analysis.prepared
    keep = keep or max(1, (N * P) // 10)
    if prepared.merged_grid:  # Qwen: the image at the size its processor chose, its merged cells
        patch = reference.model.config.vision_config.patch_size
        side, size = tuple(prepared.merged_grid), tuple(patch * v for v in prepared.patch_grid)
        pixels, grid = preprocess(image, image_processor_spec(reference.processor, size))
    else:
        side = reference.visual.patches_per_side
        pixels, grid = preprocess(image, image_processor_spec(reference.processor))
    base, canvas = views(pixels, grid)
    rows, kept = [], {}
    with torch.no_grad():
        for method in methods:
            if registry.get(method).merges:  # visionzip merges before the projector: dominant and contextual tokens
                zipped = visionzip(analysis.hidden[None], saliency[None], analysis.keys[None], keep)
                chosen = zipped.positions[0].tolist()
                cues = {p: "merged" if m else "saliency" for p, m in zip(chosen, zipped.contextual[0].tolist())}
            else:
                chosen = registry.select(method, saliency[None], relevance[None], keep,
                                        tokens=tokens.reshape(1, N * P, D))[0]  # fmt: skip
                chosen = chosen.tolist()
                if method == "adafv":
                    by_relevance = set(largest(relevance[None].float(), keep)[1][0].tolist())
                    by_saliency = set(fastervlm_positions(saliency[None], relevance[None], keep)[0].tolist())
                    cues = {p: "both" if p in by_relevance and p in by_saliency else
                            "relevance" if p in by_relevance else "saliency" for p in chosen}  # fmt: skip
                else:
                    cues = {p: registry.get(method).cue for p in chosen}
            rows.append((f"{method}, keep {keep} of {N * P}", *paint(base, canvas, cues, side, grid[1])))
            kept[method] = len(chosen)
    legend = ["saliency", "relevance", "both", *(["merged"] if "visionzip" in methods else []), "kept"]
    return rows, kept, legend

"""Toy-world scenes and questions: seeded, deterministic, pure Python + numpy + PIL (no torch).

A scene is an RGB image whose aspect ratio makes LLaVA-NeXT's anyres pick one of its five grids of 64-px crops
(1x2, 2x1, 2x2, 3x1, 1x3), over a textured background with muted clutter (stripes, blotches, noise, lines, specks).
On it: one **large** salient object (the distractor a [CLS] token looks at; 58-68% of the shorter side) and up to 6
**small** objects, each a shape (circle, square, triangle, cross) x a saturated colour (red, green, blue, yellow,
purple) x a position. Small objects are 18-24 px across in the high-resolution crops (2-3 patches of 8 px: the
smallest size at which our 4-layer tower learns their shape in minutes; at 11-15 px it stayed near chance) but only
about 6-12 px in the base view. No two small objects share a (colour, shape) pair; each small object lies fully
inside one quadrant.

Questions have one-word answers and record the size of the object they are about (`small` or `large`):

* colour:   "What color is the small triangle?"        -> red | green | blue | yellow | purple
* exist:    "Is there a small green cross?"            -> yes | no
* position: "Where is the large blue circle?"          -> top-left | top-right | bottom-left | bottom-right
* count:    "How many small squares are there?"        -> zero ... five (always about small objects)

The same seed gives the same image (byte for byte), the same objects and the same questions. Training scenes use
seeds below `HELDOUT_SEED`; the held-out set uses seeds from `HELDOUT_SEED` on.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
from PIL import Image, ImageDraw

NAME = "v1"
CROP = 64  # side of one anyres crop in pixels (the tower's image_size)
PATCH = 8  # the tower's patch size: P = (64/8)^2 = 64 patches per crop
GRIDS = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))  # (rows, cols) of high-resolution crops, LLaVA-NeXT's pinpoints
PINPOINTS = [[r * CROP, c * CROP] for r, c in GRIDS]  # (height, width) in pixels
SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COLORS = {
    "red": (225, 35, 35),
    "green": (30, 185, 55),
    "blue": (40, 75, 235),
    "yellow": (245, 215, 30),
    "purple": (160, 50, 210),
}
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
SIZES = ("small", "large")
KINDS = ("color", "exist", "position", "count")
HELDOUT_SEED = 1_000_000_000  # held-out seeds are HELDOUT_SEED + i; training seeds stay below
DESCRIBE = "Describe the picture."
SMALL_DIAMETER = (18.0, 24.0)  # small objects, in pixels of a high-resolution crop
CLUTTER = (8, 25)  # number of clutter items: [low, high)
SMALL_FRACTION = 0.6  # P(small) for colour / exist / position questions; count questions are always small

# every word the questions, answers and descriptions use (the tokenizer's vocabulary, after the special tokens)
WORDS = (
    ["USER:", "ASSISTANT:", "What", "color", "is", "the", "Is", "there", "a", "Where", "How", "many", "are"]
    + ["Describe", "picture", "?", ".", ","]
    + list(SIZES)
    + list(SHAPES)
    + list(PLURALS.values())
    + list(COLORS)
    + list(QUADRANTS)
    + list(NUMBERS)
    + ["yes", "no"]
)


@dataclasses.dataclass(frozen=True)
class Obj:
    """One object: its attributes, centre (x, y) and diameter in image pixels."""

    shape: str
    color: str
    size: str  # small | large
    x: float
    y: float
    diameter: float
    quadrant: str

    def words(self) -> str:
        return f"{self.size} {self.color} {self.shape} {self.quadrant}"


@dataclasses.dataclass(frozen=True)
class Question:
    """A question with a one-word answer; `size` is the size of the object(s) it is about."""

    text: str
    answer: str
    kind: str  # color | exist | position | count
    size: str  # small | large
    target: tuple[int, ...]  # indices (into Scene.objects) of the objects the answer depends on; () if none


@dataclasses.dataclass
class Scene:
    """A generated scene: the image, a per-pixel object map and its objects (objects[0] is the large one)."""

    seed: int
    image: Image.Image  # RGB (H, W)
    labels: np.ndarray  # (H, W) uint8: 0 background, i + 1 where objects[i] is drawn
    objects: list[Obj]
    grid: tuple[int, int]  # (rows, cols) of the high-resolution crops anyres picks for this image

    @property
    def large(self) -> Obj:
        return self.objects[0]

    @property
    def small(self) -> list[Obj]:
        return self.objects[1:]

    def ordered(self) -> list[Obj]:
        """The objects in the description's order: the large object, then the small ones by quadrant, then left to
        right."""
        rank = {q: i for i, q in enumerate(QUADRANTS)}
        return [self.large, *sorted(self.small, key=lambda o: (rank[o.quadrant], o.x, o.y))]

    def phrases(self) -> list[str]:
        """The objects in words, one phrase each, in `ordered` order (the description's parts)."""
        return [o.words() for o in self.ordered()]

    def description(self) -> str:
        """The scene in words: its phrases, comma-separated."""
        return " , ".join(self.phrases()) + " ."


def best_grid(height: int, width: int, pinpoints=None, grids=None) -> tuple[int, int]:
    """The (rows, cols) anyres picks for an image (transformers' `select_best_resolution` over `pinpoints`, by
    default this world's PINPOINTS, whose grids are `grids`)."""
    best, best_eff, best_waste = None, 0, math.inf
    for (h, w), grid in zip(pinpoints or PINPOINTS, grids or GRIDS):
        scale = min(w / width, h / height)
        eff = min(int(width * scale) * int(height * scale), width * height)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = grid, eff, waste
    return best


def quadrant(x: float, y: float, width: int, height: int) -> str:
    return ("top" if y < height / 2 else "bottom") + "-" + ("left" if x < width / 2 else "right")


# -- drawing -----------------------------------------------------------------------------------------------------


def _shape_polygons(shape: str, x: float, y: float, r: float) -> list[tuple[str, list[float]]]:
    """The drawing primitives of a shape of radius r centred at (x, y): ("ellipse" | "rect" | "poly", coords)."""
    if shape == "circle":
        return [("ellipse", [x - r, y - r, x + r, y + r])]
    if shape == "square":
        h = 0.85 * r
        return [("rect", [x - h, y - h, x + h, y + h])]
    if shape == "triangle":
        return [("poly", [x, y - r, x - r, y + 0.8 * r, x + r, y + 0.8 * r])]
    t = 0.36 * r  # cross: two bars
    return [("rect", [x - r, y - t, x + r, y + t]), ("rect", [x - t, y - r, x + t, y + r])]


def _draw(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, fill) -> None:
    for kind, coords in _shape_polygons(shape, x, y, r):
        if kind == "ellipse":
            draw.ellipse(coords, fill=fill)
        elif kind == "rect":
            draw.rectangle(coords, fill=fill)
        else:
            draw.polygon(coords, fill=fill)


def _muted(rng: np.random.Generator, lo: float = 50, hi: float = 200) -> tuple[int, int, int]:
    """A low-saturation colour: a grey with a small tint (never mistaken for an object's saturated colour)."""
    v = rng.uniform(lo, hi)
    tint = rng.normal(0.0, 9.0, 3)
    return tuple(int(c) for c in np.clip(v + tint, 0, 255))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Textured background (H, W, 3) float: a muted base, low-frequency blotches, stripes and fine noise."""
    img = np.empty((height, width, 3))
    img[:] = _muted(rng, 70, 185)  # (H, W, 3)
    gh, gw = height // 12 + 2, width // 12 + 2
    blotch = rng.normal(0.0, 1.0, (gh, gw)).astype(np.float32)
    blotch = np.asarray(Image.fromarray(blotch, mode="F").resize((width, height), Image.BILINEAR))  # (H, W)
    img += rng.uniform(10, 26) * blotch[..., None]
    yy, xx = np.mgrid[0:height, 0:width]  # (H, W) each
    theta, period, phase = rng.uniform(0, math.pi), rng.uniform(5, 16), rng.uniform(0, 2 * math.pi)
    stripes = np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period + phase)  # (H, W)
    img += rng.uniform(0, 18) * stripes[..., None] * np.asarray(rng.uniform(0.7, 1.0, 3))
    img += rng.normal(0.0, rng.uniform(3, 9), (height, width, 3))
    return np.clip(img, 0, 255)


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, height: int, width: int, f: int) -> None:
    """Muted lines and specks, drawn on the supersampled canvas (factor f)."""
    for _ in range(int(rng.integers(*CLUTTER))):
        colour = _muted(rng, 35, 225)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        if rng.random() < 0.55:
            length, angle = rng.uniform(5, 30), rng.uniform(0, 2 * math.pi)
            x2, y2 = x + length * math.cos(angle), y + length * math.sin(angle)
            draw.line([x * f, y * f, x2 * f, y2 * f], fill=colour, width=int(rng.integers(1, 3)) * f)
        else:
            r = rng.uniform(0.8, 2.6)
            draw.ellipse([(x - r) * f, (y - r) * f, (x + r) * f, (y + r) * f], fill=colour)


# -- scenes ------------------------------------------------------------------------------------------------------


def _image_size(rng: random.Random, grids=GRIDS, scales=(0.75, 1.0), aspects=(0.92, 1.08), pick=None):
    """(height, width, grid, scale): an image whose anyres grid (by `pick`, this world's best_grid by default) is
    one of `grids`, 0.75-1.0x (`scales`) the pinpoint's size.

    Larger images would let anyres prefer the bigger grids (2x2, 3x1, 1x3) over 1x2 and 2x1; at or below the
    pinpoint's size every grid occurs, and the high-resolution crops upsample the image by 1/scale.
    """
    while True:
        grid = rng.choice(grids)
        scale, aspect = rng.uniform(*scales), rng.uniform(*aspects)
        height = round(grid[0] * CROP * scale * math.sqrt(aspect))
        width = round(grid[1] * CROP * scale / math.sqrt(aspect))
        if (pick or best_grid)(height, width) == grid:
            return height, width, grid, scale


def _place(rng: random.Random, width: int, height: int, r: float, others: list[tuple[float, float, float]], gap):
    """A centre for a disk of radius r (bounding radius 1.3r) away from the others and off the quadrant borders."""
    for _ in range(200):
        x, y = rng.uniform(r + 2, width - r - 2), rng.uniform(r + 2, height - r - 2)
        if abs(x - width / 2) < gap(r, width) or abs(y - height / 2) < gap(r, height):
            continue
        if all(math.hypot(x - ox, y - oy) >= 1.3 * (r + orr) + 3 for ox, oy, orr in others):
            return x, y
    return None


def make_scene(seed: int) -> Scene:
    """The scene of one seed (deterministic: same seed, same pixels, objects and grid)."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    height, width, grid, scale = _image_size(rng)

    # the large salient object: about half the shorter side, its centre clearly inside one quadrant
    d_large = rng.uniform(0.58, 0.68) * min(height, width)
    r_large = d_large / 2
    x, y = _place(rng, width, height, r_large, [], lambda r, side: 0.08 * side)
    large = Obj(rng.choice(SHAPES), rng.choice(list(COLORS)), "large", x, y, d_large, quadrant(x, y, width, height))
    objects = [large]
    taken = [(x, y, r_large)]

    # small objects: distinct (colour, shape) pairs, each fully inside one quadrant
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    rng.shuffle(pairs)
    for colour, shape in pairs[: rng.randint(3, 6)]:
        d = rng.uniform(*SMALL_DIAMETER) * scale
        spot = _place(rng, width, height, d / 2, taken, lambda r, side: r + 2)
        if spot is None:
            continue
        x, y = spot
        objects.append(Obj(shape, colour, "small", x, y, d, quadrant(x, y, width, height)))
        taken.append((x, y, d / 2))

    image, labels = render(nrng, height, width, objects)
    return Scene(seed, image, labels, objects, grid)


def render(nrng: np.random.Generator, height: int, width: int, objects: list[Obj], extra=()):
    """-> (image, label map (H, W) uint8): the textured background, the muted clutter, each of `extra` (callables
    drawing like `_clutter`), then the objects; drawn at 2x and downsampled (anti-aliasing), the label map at 1x."""
    f = 2
    background = _background(nrng, height, width).astype(np.uint8)  # (H, W, 3)
    canvas = Image.fromarray(background).resize((width * f, height * f), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    _clutter(nrng, draw, height, width, f)
    for layer in extra:
        layer(nrng, draw, height, width, f)
    labels = Image.new("L", (width, height), 0)
    label_draw = ImageDraw.Draw(labels)
    for i, o in enumerate(objects):
        jitter = nrng.integers(-12, 13, 3)
        fill = tuple(int(v) for v in np.clip(np.asarray(COLORS[o.color]) + jitter, 0, 255))
        _draw(draw, o.shape, o.x * f, o.y * f, o.diameter / 2 * f, fill)
        _draw(label_draw, o.shape, o.x, o.y, o.diameter / 2, i + 1)
    return canvas.resize((width, height), Image.BOX), np.asarray(labels)


# -- questions ---------------------------------------------------------------------------------------------------


def _ask(scene: Scene, rng: random.Random, kind: str, size: str) -> Question | None:
    """One question of a kind about objects of a size, or None when the scene offers none."""
    objs = scene.objects
    small = list(range(1, len(objs)))
    if size == "small" and not small and kind != "count":
        return None  # a rare scene whose small objects found no room
    if kind == "count":
        shape = rng.choice(SHAPES)
        which = tuple(i for i in small if objs[i].shape == shape)
        return Question(f"How many small {PLURALS[shape]} are there?", NUMBERS[len(which)], kind, "small", which)
    if kind == "color":
        if size == "large":
            return Question(f"What color is the large {objs[0].shape}?", objs[0].color, kind, size, (0,))
        unique = [i for i in small if sum(objs[j].shape == objs[i].shape for j in small) == 1]
        if not unique:
            return None
        i = rng.choice(unique)
        return Question(f"What color is the small {objs[i].shape}?", objs[i].color, kind, size, (i,))
    if kind == "position":
        i = 0 if size == "large" else rng.choice(small)
        o = objs[i]
        return Question(f"Where is the {size} {o.color} {o.shape}?", o.quadrant, kind, size, (i,))
    # exist: half yes, half no
    pool = [0] if size == "large" else small
    present = {(objs[i].color, objs[i].shape) for i in pool}
    if rng.random() < 0.5:
        i = rng.choice(pool)
        return Question(f"Is there a {size} {objs[i].color} {objs[i].shape}?", "yes", kind, size, (i,))
    others = [i for i in range(len(objs)) if i not in pool and (objs[i].color, objs[i].shape) not in present]
    if others and rng.random() < 0.5:  # a hard negative: the pair exists, but at the other size
        i = rng.choice(others)
        colour, shape = objs[i].color, objs[i].shape
    else:
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        colour, shape = rng.choice(absent)
    return Question(f"Is there a {size} {colour} {shape}?", "no", kind, size, ())


def ask(scene: Scene, rng: random.Random, kinds=KINDS, small_fraction: float = SMALL_FRACTION) -> Question:
    """One question drawn from the question distribution: kind uniform over `kinds`; count always small, the rest
    small with probability `small_fraction`."""
    while True:
        kind = rng.choice(kinds)
        size = "small" if kind == "count" or rng.random() < small_fraction else "large"
        q = _ask(scene, rng, kind, size)
        if q is not None:
            return q


def questions(scene: Scene, rng: random.Random, n: int, **distribution) -> list[Question]:
    """Up to n distinct questions about one scene (for multi-turn training conversations); `distribution` goes to
    `ask` (kinds, small_fraction)."""
    return distinct(ask, scene, rng, n, **distribution)


def distinct(ask_one, scene: Scene, rng: random.Random, n: int, **distribution) -> list[Question]:
    """Up to n distinct questions drawn by `ask_one(scene, rng, **distribution)` (a world's `ask`)."""
    out: list[Question] = []
    for _ in range(4 * n):
        q = ask_one(scene, rng, **distribution)
        if all(q.text != o.text for o in out):
            out.append(q)
        if len(out) == n:
            break
    return out


def sample(seed: int) -> tuple[Scene, Question]:
    """A scene and one question about it, both from the seed."""
    scene = make_scene(seed)
    return scene, ask(scene, random.Random(seed * 7919 + 17))


def heldout(n: int, start: int = 0, sample_one=None):
    """The fixed held-out set: samples HELDOUT_SEED + start ... + start + n - 1 (a generator of (scene, question));
    `sample_one` is a world's `sample` (v1's by default)."""
    for i in range(start, start + n):
        yield (sample_one or sample)(HELDOUT_SEED + i)

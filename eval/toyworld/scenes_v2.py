"""Toy world v2: scenes and questions that test text relevance on objects a [CLS] token does not look at.

Seeded and deterministic like v1 (`scenes.py`, kept as it was for the v1 model), pure Python + numpy + PIL. What
changed, and why (v1's measurements: docs/results/toyworld.md):

* **A large salient distractor that every crop shows.** The large object (50-60% of the shorter side) sits near the
  image's centre, so it reaches into every high-resolution crop of the anyres grids v2 uses (1x2, 2x1, 2x2) as well
  as the base view. The tower's [CLS] is trained to name it, so that [CLS] attention, the saliency cue, has a
  salient object to go to in *every* crop; in v1 crops without the large object handed their attention to the small
  objects, and the median queried object out-ranked 98% of its image's patches (v2's ranks: docs/results).
* **Questions only about small objects in clutter**: up to 6 small objects (most scenes have 2-4; 20-26 px across
  in the high-resolution crops) around the distractor, among muted clutter and saturated *confetti* (dots and dashes
  in the objects' own colours), so that colour alone does not find an object: its colour and its shape do. The
  distractor is never asked about (questions can mention its colour and shape at the other size: "Is there a small
  red circle?" -> no).
* **Five kinds, balanced** (the held-out set cycles through them; answers are drawn first where the kind allows):

  - colour:   "What color is the small triangle?"               -> red | green | blue | yellow | purple
  - exist:    "Is there a small green cross?"                   -> yes | no
  - count:    "How many small squares are there?"               -> zero | one | two | three
  - position: "Where is the small blue circle?"                 -> top-left | top-right | bottom-left | bottom-right
  - relation: "Is the small red circle left of the small blue square?" -> yes | no (the two lie in different halves
    along the asked axis, so the answer follows from their quadrants; left of, right of, above, below)

  A model that never looks scores about 23 / 50 / 40 / 28 / 53% (count: three objects of a shape rarely fit).
* The description a caption stage trains on lists the large object (no place), then the small ones by quadrant:
  `large red circle , small blue square top-left , ... .`

The same seed gives the same image (byte for byte), objects and questions. Training uses seeds below
`HELDOUT_SEED`; the held-out set uses seeds from `HELDOUT_SEED` on.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
from PIL import ImageDraw

from . import scenes as v1
from .scenes import COLORS, CROP, PATCH, PLURALS, QUADRANTS, SHAPES, Obj, Question, quadrant

__all__ = ["CROP", "PATCH", "COLORS", "SHAPES", "PLURALS", "QUADRANTS", "Obj", "Question", "Scene"]

NAME = "v2"
GRIDS = ((1, 2), (2, 1), (2, 2))  # (rows, cols): grids whose every crop can show a central distractor
PINPOINTS = [[r * CROP, c * CROP] for r, c in GRIDS]  # (height, width) in pixels
NUMBERS = ("zero", "one", "two", "three")
SIZES = ("small", "large")
KINDS = ("color", "exist", "count", "position", "relation")
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}  # (axis, sign)
HELDOUT_SEED = 1_000_000_000
DESCRIBE = "Describe the picture."
LARGE_DIAMETER = (0.5, 0.6)  # share of the shorter side (centred: a quarter of it lies in each crop of a 2x2)
SMALL_DIAMETER = (20.0, 26.0)  # small objects, in pixels of a high-resolution crop
CONFETTI = (10, 22)  # saturated dots and dashes: [low, high)
MAX_SMALL = 6  # at most 7 objects: the label maps' ids 1-7 (train.patch_objects, attribute_table)

# v1's vocabulary without the numbers above three, and the relation words
WORDS = [w for w in v1.WORDS if w not in v1.NUMBERS[len(NUMBERS) :]] + ["left", "right", "of", "above", "below"]


@dataclasses.dataclass
class Scene(v1.Scene):
    """A v2 scene: objects[0] is the large distractor; `count_shape` is the shape whose number was drawn first."""

    count_shape: str = "circle"

    def phrases(self) -> list[str]:
        """As v1's, the large distractor without its quadrant (it lies at the centre)."""
        return [f"large {self.large.color} {self.large.shape}", *super().phrases()[1:]]


def best_grid(height: int, width: int) -> tuple[int, int]:
    """The (rows, cols) anyres picks for an image among v2's PINPOINTS."""
    return v1.best_grid(height, width, PINPOINTS, GRIDS)


def _image_size(rng: random.Random) -> tuple[int, int, tuple[int, int], float]:
    """(height, width, grid, scale) as in v1, over v2's grids, 0.8-1.0x the pinpoint's size."""
    return v1._image_size(rng, GRIDS, (0.8, 1.0), (0.94, 1.06), best_grid)


def _confetti(rng: np.random.Generator, draw: ImageDraw.ImageDraw, height: int, width: int, f: int) -> None:
    """Saturated dots (radius 1.5-3 px) and dashes (6-12 px long, 2 px wide) in the objects' colours, drawn before
    the objects (an object covers what it overlaps)."""
    palette = list(COLORS.values())
    for _ in range(int(rng.integers(*CONFETTI))):
        colour = tuple(int(v) for v in np.clip(np.asarray(palette[int(rng.integers(len(palette)))])
                                               + rng.integers(-15, 16, 3), 0, 255))  # fmt: skip
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        if rng.random() < 0.5:
            r = rng.uniform(1.5, 3.0)
            draw.ellipse([(x - r) * f, (y - r) * f, (x + r) * f, (y + r) * f], fill=colour)
        else:
            length, angle = rng.uniform(6, 12), rng.uniform(0, 2 * math.pi)
            x2, y2 = x + length * math.cos(angle), y + length * math.sin(angle)
            draw.line([x * f, y * f, x2 * f, y2 * f], fill=colour, width=2 * f)


def make_scene(seed: int) -> Scene:
    """The scene of one seed (deterministic: same seed, same pixels, objects and grid)."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    height, width, grid, scale = _image_size(rng)

    # the distractor: near the centre, so that it reaches into every crop
    d_large = rng.uniform(*LARGE_DIAMETER) * min(height, width)
    x = width / 2 + rng.uniform(-0.05, 0.05) * width
    y = height / 2 + rng.uniform(-0.05, 0.05) * height
    large = Obj(rng.choice(SHAPES), rng.choice(list(COLORS)), "large", x, y, d_large, quadrant(x, y, width, height))
    objects = [large]
    taken = [(x, y, d_large / 2)]

    # small objects: the count shape's number first (0-3, uniform), then 2-4 of the other shapes; distinct
    # (colour, shape) pairs, each fully inside one quadrant
    count_shape = rng.choice(SHAPES)
    others = [s for s in SHAPES if s != count_shape]
    wanted = [count_shape] * rng.randint(0, 3) + [rng.choice(others) for _ in range(rng.randint(2, 4))]
    wanted = wanted[:MAX_SMALL]
    used: set[tuple[str, str]] = set()
    for shape in wanted:
        free = [c for c in COLORS if (c, shape) not in used]
        if not free:
            continue
        colour = rng.choice(free)
        d = rng.uniform(*SMALL_DIAMETER) * scale
        spot = v1._place(rng, width, height, d / 2, taken, lambda r, side: 0.5 * r)
        if spot is None:
            continue
        used.add((colour, shape))
        sx, sy = spot
        objects.append(Obj(shape, colour, "small", sx, sy, d, quadrant(sx, sy, width, height)))
        taken.append((sx, sy, d / 2))

    image, labels = v1.render(nrng, height, width, objects, extra=(_confetti,))
    return Scene(seed, image, labels, objects, grid, count_shape)


# -- questions ---------------------------------------------------------------------------------------------------


def _name(o: Obj) -> str:
    return f"the small {o.color} {o.shape}"


def _ask(scene: Scene, rng: random.Random, kind: str) -> Question | None:
    """One question of a kind about the small objects, or None when the scene offers none."""
    objs = scene.objects
    small = list(range(1, len(objs)))
    if kind == "count":
        by_shape = {s: tuple(i for i in small if objs[i].shape == s) for s in SHAPES}
        n = rng.randrange(len(NUMBERS))  # the answer first; else the count shape, whose number was drawn first
        shapes = [s for s in SHAPES if len(by_shape[s]) == n]
        shape = rng.choice(shapes) if shapes else scene.count_shape
        return Question(f"How many small {PLURALS[shape]} are there?", NUMBERS[len(by_shape[shape])], kind, "small",
                        by_shape[shape])  # fmt: skip
    if not small:
        return None
    if kind == "color":
        unique = [i for i in small if sum(objs[j].shape == objs[i].shape for j in small) == 1]
        if not unique:
            return None
        i = rng.choice(unique)
        return Question(f"What color is the small {objs[i].shape}?", objs[i].color, kind, "small", (i,))
    if kind == "position":
        i = rng.choice(small)
        return Question(f"Where is {_name(objs[i])}?", objs[i].quadrant, kind, "small", (i,))
    if kind == "exist":
        present = {(objs[i].color, objs[i].shape) for i in small}
        if rng.random() < 0.5:
            i = rng.choice(small)
            return Question(f"Is there a small {objs[i].color} {objs[i].shape}?", "yes", kind, "small", (i,))
        large = (objs[0].color, objs[0].shape)
        if large not in present and rng.random() < 0.3:  # a hard negative: the distractor's pair, at the other size
            colour, shape = large
        else:  # often a near miss: a present shape in another colour, or a present colour on another shape
            absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
            near = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
            colour, shape = rng.choice(near if near and rng.random() < 0.7 else absent)
        return Question(f"Is there a small {colour} {shape}?", "no", kind, "small", ())
    # relation: two small objects in different halves along the asked axis
    truth = rng.random() < 0.5
    pairs = []
    for a in small:
        for b in small:
            if a == b:
                continue
            qa, qb = objs[a].quadrant.split("-"), objs[b].quadrant.split("-")
            for words, (axis, sign) in RELATIONS.items():
                # axis 0: left/right (second part of the quadrant), axis 1: top/bottom (first part)
                part = 1 if axis == 0 else 0
                if qa[part] == qb[part]:
                    continue
                a_low = qa[part] in ("left", "top")  # a is left of / above b
                holds = a_low if sign < 0 else not a_low
                if holds == truth:
                    pairs.append((a, b, words))
    if not pairs:
        return None
    a, b, words = rng.choice(pairs)
    text = f"Is {_name(objs[a])} {words} {_name(objs[b])}?"
    return Question(text, "yes" if truth else "no", kind, "small", (a, b))


def ask(scene: Scene, rng: random.Random, kinds=KINDS) -> Question:
    """One question: kind uniform over `kinds` (a kind the scene cannot ask is drawn again)."""
    for _ in range(100):
        q = _ask(scene, rng, rng.choice(kinds))
        if q is not None:
            return q
    raise ValueError(f"scene {scene.seed} offers no question of kinds {kinds}")


def questions(scene: Scene, rng: random.Random, n: int, **distribution) -> list[Question]:
    """Up to n distinct questions about one scene (multi-turn training conversations); `distribution`: kinds."""
    return v1.distinct(ask, scene, rng, n, **distribution)


def sample(seed: int) -> tuple[Scene, Question]:
    """A scene and one question about it, both from the seed; the kind cycles with the seed (balanced kinds)."""
    scene = make_scene(seed)
    rng = random.Random(seed * 7919 + 17)
    first = seed % len(KINDS)
    for kind in KINDS[first:] + KINDS[:first]:  # the seed's kind, or the next one the scene can ask
        for _ in range(20):
            q = _ask(scene, rng, kind)
            if q is not None:
                return scene, q
    return scene, ask(scene, rng)


def heldout(n: int, start: int = 0):
    """The fixed held-out set: samples HELDOUT_SEED + start ... + start + n - 1 (a generator of (scene, question))."""
    return v1.heldout(n, start, sample)

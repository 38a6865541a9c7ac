"""The sandbox tasks: procedurally generated image-classification tasks.

Each task draws its own kind of image (glyphs, shapes, colours, textures, counts, layouts,
...) with nuisance variation (position, scale, rotation, colours, background blotches,
pixel noise), so the tasks need different features, like the 8/14/20-task vision benchmark
of Ilharco et al. (2023) and Wang et al. (ICML 2024). :data:`GENERATORS` pairs each task's
class names and templates (data, :data:`DATA_FILE`) with its drawing function (code), in the
file's canonical order: the first 8 / 14 / 20 form sandbox8 / sandbox14 / sandbox20
(:mod:`evaluation.sandbox.benchmark`), where real MNIST and Fashion-MNIST take the places of
digits and arrows when installed (:mod:`evaluation.sandbox.real_tasks`).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from evaluation.sandbox import draw as d

IMAGE_SIZE = 32
Draw = Callable[[np.random.Generator, np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class TaskGenerator:
    """Generates a sandbox task's data: class names and prompt templates for captions and
    zero-shot heads, and ``draw(rng, labels, size)`` -> float images (N, size, size, 3) in
    [0, 1]."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    draw: Draw

    def sample(
        self, n: int, seed: int, size: int = IMAGE_SIZE, classes: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` images, uint8 (n, 3, size, size), and int64 labels, balanced over ``classes``
        (default: all; counts differ by at most one), all determined by ``seed``."""
        rng = np.random.default_rng(seed)
        labels = balanced_labels(rng, n, len(self.classnames), classes)
        return d.to_uint8(self.draw(rng, labels, size)), labels


def balanced_labels(
    rng: np.random.Generator, n: int, k: int, classes: Sequence[int] | None = None
) -> np.ndarray:
    """``n`` int64 labels in random order, balanced over ``classes`` (default: all ``k``):
    each class ``n // len(classes)`` or one more times."""
    pool = np.arange(k) if classes is None else np.asarray(classes)
    return rng.permutation(pool[np.arange(n) % len(pool)]).astype(np.int64)


def _place(rng: d.Rng, extent: np.ndarray, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Random centres, at most ``spread`` from the middle, keeping an object of half-size
    ``extent`` inside the canvas."""
    free = np.clip(0.95 - extent, 0.0, spread)
    n = len(extent)
    return rng.uniform(-1, 1, n) * free, rng.uniform(-1, 1, n) * free


def _object_scene(
    rng: d.Rng, size: int, scale: np.ndarray, spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Local frame (u, v, px) of one randomly placed, slightly rotated object per image,
    and a contrasting (background image, foreground colour) pair."""
    n = len(scale)
    cx, cy = _place(rng, scale, spread)
    u, v, px = d.local(size, cx, cy, scale, rng.uniform(-0.3, 0.3, n))
    bg, fg = d.contrasting_colours(rng, n)
    return u, v, px, (d.background(rng, bg, size), fg)


def _glyph_task(
    texts: list[str], angle: float = 0.25, scale: tuple[float, float] = (0.6, 0.9)
) -> Draw:
    """Text ``texts[label]`` in :data:`draw.FONT`, ``scale`` = half-height range (shrunk so
    that wide text fits), turned by up to ``angle`` radians either way."""
    bitmaps = d.text_bitmaps(texts)
    aspect = bitmaps.shape[2] / bitmaps.shape[1]

    def draw(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
        n = len(labels)
        half = rng.uniform(*scale, n) * min(1.0, 0.95 / aspect)
        free_x = np.clip(0.95 - half * aspect, 0, 0.25)
        free_y = np.clip(0.95 - half, 0, 0.25)
        cx, cy = rng.uniform(-1, 1, n) * free_x, rng.uniform(-1, 1, n) * free_y
        u, v, px = d.local(size, cx, cy, half, rng.uniform(-angle, angle, n))
        bg, fg = d.contrasting_colours(rng, n)
        mask = d.glyph_mask(bitmaps, labels, u, v, px, rng.uniform(0.4, 0.65, n))
        return d.finish(rng, d.paint(d.background(rng, bg, size), mask, fg))

    return draw


def _shapes(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    scale = rng.uniform(0.45, 0.85, len(labels))
    u, v, px, (img, fg) = _object_scene(rng, size, scale, spread=0.35)
    return d.finish(rng, d.paint(img, d.coverage(d.random_shapes(u, v, labels), px), fg))


# (hue in turns, saturation range, value range) of each named colour.
_COLOURS = {
    "red": (0.0, (0.75, 1.0), (0.7, 1.0)),
    "orange": (0.07, (0.8, 1.0), (0.85, 1.0)),
    "brown": (0.07, (0.6, 0.9), (0.35, 0.55)),
    "yellow": (0.155, (0.75, 1.0), (0.85, 1.0)),
    "lime": (0.24, (0.7, 1.0), (0.75, 1.0)),
    "green": (0.33, (0.6, 1.0), (0.45, 0.8)),
    "teal": (0.47, (0.6, 1.0), (0.4, 0.6)),
    "cyan": (0.5, (0.6, 1.0), (0.8, 1.0)),
    "blue": (0.64, (0.7, 1.0), (0.6, 1.0)),
    "purple": (0.77, (0.6, 0.9), (0.45, 0.75)),
    "magenta": (0.85, (0.7, 1.0), (0.8, 1.0)),
    "pink": (0.95, (0.3, 0.5), (0.9, 1.0)),
}


def _colours(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    n = len(labels)
    spec = list(_COLOURS.values())
    hue = np.array([spec[k][0] for k in labels]) + rng.uniform(-0.02, 0.02, n)
    sat = np.array([rng.uniform(*spec[k][1]) for k in labels])
    val = np.array([rng.uniform(*spec[k][2]) for k in labels])
    grey = d.hsv_to_rgb(rng.random(n), rng.uniform(0, 0.12, n), rng.uniform(0.1, 0.9, n))
    scale = rng.uniform(0.3, 0.7, n)
    cx, cy = _place(rng, scale)
    u, v, px = d.local(size, cx, cy, scale, rng.uniform(-0.3, 0.3, n))
    shape = d.coverage(d.random_shapes(u, v, rng.integers(0, len(d.SHAPES), n)), px)
    img = d.paint(d.background(rng, grey, size), shape, d.hsv_to_rgb(hue % 1, sat, val))
    return d.finish(rng, img)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _textures(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    n = len(labels)
    period = rng.uniform(0.3, 0.55, n)
    zeros = np.zeros(n)
    u, v, px = d.local(size, zeros, zeros, period, rng.uniform(0, np.pi, n))
    u, v = u + rng.random(n)[:, None, None], v + rng.random(n)[:, None, None]
    su = d.coverage(np.abs(_frac(u) - 0.5) - 0.25, px)
    sv = d.coverage(np.abs(_frac(v) - 0.5) - 0.25, px)
    amp = rng.uniform(0.25, 0.45, n)[:, None, None]
    width = rng.uniform(0.12, 0.22, n)[:, None, None]
    patterns = [
        lambda: su,  # striped
        lambda: su + sv - 2 * su * sv,  # checkered
        lambda: d.coverage(np.hypot(_frac(u) - 0.5, _frac(v) - 0.5) - 1.5 * width, px),  # dotted
        lambda: d.coverage(
            np.minimum(np.abs(_frac(u) - 0.5), np.abs(_frac(v) - 0.5)) - width / 2, px
        ),  # grid
        lambda: d.coverage(
            np.abs(_frac(v + amp * 2 * np.abs(_frac(u / 2) - 0.5)) - 0.5) - 0.25, px
        ),  # zigzag
        lambda: d.coverage(np.abs(_frac(v + amp * np.sin(np.pi * u)) - 0.5) - 0.25, px),  # wavy
        lambda: (rng.random(u.shape) < rng.uniform(0.15, 0.35, n)[:, None, None]) * 1.0,
        lambda: np.zeros_like(u),  # plain
    ]
    mask = np.empty_like(u)
    for k, pattern in enumerate(patterns):
        sel = labels == k
        mask[sel] = pattern()[sel]
    bg, fg = d.contrasting_colours(rng, n)
    return d.finish(rng, d.paint(d.background(rng, bg, size), mask, fg))


def _counting(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    """1 + label dots in distinct cells of a jittered 3x3 grid."""
    n = len(labels)
    cells = np.argsort(rng.random((n, 9)), axis=1)
    radius = rng.uniform(0.13, 0.21, n)
    bg, fg = d.contrasting_colours(rng, n)
    img = d.background(rng, bg, size)
    for j in range(6):
        jitter = (1 / 3 - radius)[:, None] * rng.uniform(-1, 1, (n, 2))
        cx = (cells[:, j] % 3 - 1) * 2 / 3 + jitter[:, 0]
        cy = (cells[:, j] // 3 - 1) * 2 / 3 + jitter[:, 1]
        u, v, px = d.local(size, cx, cy, radius * rng.uniform(0.85, 1.15, n))
        img = d.paint(img, d.coverage(d.disc(u, v), px) * (j <= labels)[:, None, None], fg)
    return d.finish(rng, img)


def _bar(u: np.ndarray, v: np.ndarray, width: np.ndarray) -> np.ndarray:
    """A bar from u = -1 to u = 1 of ``width`` (N, 1, 1), in local units."""
    return np.maximum(np.abs(u) - 1, np.abs(v) - width / 2)


def _orientation(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    """A long bar at label * 30 degrees (anticlockwise from horizontal) among short strokes."""
    n = len(labels)
    bg, fg = d.contrasting_colours(rng, n)
    img = d.background(rng, bg, size)
    width = rng.uniform(0.1, 0.18, n)[:, None, None]
    for _ in range(3):
        s = rng.uniform(0.12, 0.25, n)
        cx, cy = _place(rng, s)
        u, v, px = d.local(size, cx, cy, s, rng.uniform(0, np.pi, n))
        img = d.paint(img, d.coverage(_bar(u, v, width / s[:, None, None]), px), fg)
    s = rng.uniform(0.6, 0.9, n)
    cx, cy = _place(rng, s * 0.7, spread=0.3)
    u, v, px = d.local(size, cx, cy, s, -labels * np.pi / 6 + rng.uniform(-0.1, 0.1, n))
    return d.finish(rng, d.paint(img, d.coverage(_bar(u, v, width / s[:, None, None]), px), fg))


def _arrows(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    """An arrow pointing right / down / left / up (label * 90 degrees clockwise)."""
    n = len(labels)
    s = rng.uniform(0.45, 0.85, n)
    cx, cy = _place(rng, s)
    u, v, px = d.local(size, cx, cy, s, labels * np.pi / 2 + rng.uniform(-0.3, 0.3, n))
    bg, fg = d.contrasting_colours(rng, n)
    return d.finish(rng, d.paint(d.background(rng, bg, size), d.coverage(d.arrow(u, v), px), fg))


def _positions(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    n = len(labels)
    scale = rng.uniform(0.14, 0.26, n)
    free = 1 / 3 - scale * 0.6
    cx = (labels % 3 - 1) * 0.62 + free * rng.uniform(-1, 1, n)
    cy = (labels // 3 - 1) * 0.62 + free * rng.uniform(-1, 1, n)
    u, v, px = d.local(size, cx, cy, scale, rng.uniform(-0.3, 0.3, n))
    bg, fg = d.contrasting_colours(rng, n)
    shape = d.coverage(d.random_shapes(u, v, rng.integers(0, len(d.SHAPES), n)), px)
    return d.finish(rng, d.paint(d.background(rng, bg, size), shape, fg))


def _faces(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    """A face whose mouth (and eyes) show happy / sad / surprised / neutral."""
    n = len(labels)
    scale = rng.uniform(0.6, 0.92, n)
    cx, cy = _place(rng, scale)
    u, v, px = d.local(size, cx, cy, scale, rng.uniform(-0.25, 0.25, n))
    bg, skin = d.contrasting_colours(rng, n)
    ink = np.clip(bg + rng.uniform(-0.15, 0.15, (n, 3)), 0, 1)
    img = d.paint(d.background(rng, bg, size), d.coverage(d.disc(u, v), px), skin)
    eye = rng.uniform(0.11, 0.16, n)[:, None, None] * np.where(labels == 2, 1.3, 1.0)[:, None, None]
    eyes = np.minimum(np.hypot(u - 0.36, v + 0.28), np.hypot(u + 0.36, v + 0.28)) - eye
    bend = (
        rng.uniform(0.9, 1.6, n)[:, None, None]
        * np.array([-1.0, 1.0, 0.0, 0.0])[labels][:, None, None]
    )
    half = rng.uniform(0.35, 0.5, n)[:, None, None]
    y = 0.42 + bend * (u**2 - half**2 / 2)
    line = np.maximum(np.abs(v - y) - 0.07, np.abs(u) - half)
    mouth_o = np.abs(np.hypot(u / 0.8, v - 0.42) - 0.2) - 0.07
    mouth = np.where((labels == 2)[:, None, None], mouth_o, line)
    return d.finish(rng, d.paint(img, d.coverage(np.minimum(eyes, mouth), px), ink))


def _sizes(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    bands = np.array([(0.12, 0.16), (0.22, 0.28), (0.36, 0.44), (0.56, 0.66), (0.8, 0.93)])
    scale = rng.uniform(bands[labels, 0], bands[labels, 1])
    u, v, px, (img, fg) = _object_scene(rng, size, scale)
    shape = d.random_shapes(u, v, rng.integers(0, 4, len(labels)))  # compact shapes only
    return d.finish(rng, d.paint(img, d.coverage(shape, px), fg))


# Segments a..g of a seven-segment display: (centre u, centre v, horizontal?).
_SEGMENTS = (
    (0.0, -0.9, True), (0.45, -0.45, False), (0.45, 0.45, False), (0.0, 0.9, True),
    (-0.45, 0.45, False), (-0.45, -0.45, False), (0.0, 0.0, True),
)  # fmt: skip
_DIGIT_SEGMENTS = (
    "abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"
)  # fmt: skip


def _seven_segment(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    n = len(labels)
    scale = rng.uniform(0.65, 0.9, n)
    cx, cy = _place(rng, scale * 0.6, spread=0.25)
    u, v, px = d.local(size, cx, cy, scale, rng.uniform(-0.1, 0.1, n))
    u = u + rng.uniform(0, 0.25, n)[:, None, None] * v  # italic slant
    half = rng.uniform(0.09, 0.13, n)[:, None, None]
    on = np.array([["abcdefg"[k] in segs for k in range(7)] for segs in _DIGIT_SEGMENTS])
    lit, dim = np.full(u.shape, 9.0), np.full(u.shape, 9.0)
    for k, (su, sv, horizontal) in enumerate(_SEGMENTS):
        w, h = (0.34, half) if horizontal else (half, 0.38)
        sd = np.maximum(np.abs(u - su) - w, np.abs(v - sv) - h)
        active = on[labels, k][:, None, None]
        lit = np.where(active, np.minimum(lit, sd), lit)
        dim = np.where(active, dim, np.minimum(dim, sd))
    bg, fg = d.contrasting_colours(rng, n)
    ghost = bg + (fg - bg) * rng.uniform(0.0, 0.15, (n, 1))
    img = d.paint(d.background(rng, bg, size), d.coverage(dim, px), ghost)
    return d.finish(rng, d.paint(img, d.coverage(lit, px), fg))


def _clutter(rng: d.Rng, n: int, size: int, count: int = 3) -> np.ndarray:
    """Scenes of ``count`` random shapes in random colours on a random background."""
    img = d.background(rng, rng.random((n, 3)), size, blotch=0.3)
    for _ in range(count):
        scale = rng.uniform(0.15, 0.5, n)
        cx, cy = _place(rng, scale)
        u, v, px = d.local(size, cx, cy, scale, rng.uniform(0, 2 * np.pi, n))
        shape = d.random_shapes(u, v, rng.integers(0, len(d.SHAPES), n))
        img = d.paint(img, d.coverage(shape, px), rng.random((n, 3)))
    return img


def _brightness(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    n = len(labels)
    scene = _clutter(rng, n, size)
    level = (0.2 + 0.15 * labels + rng.uniform(-0.05, 0.05, n))[:, None, None, None]
    contrast = rng.uniform(0.2, 0.5, (n, 1, 1, 1))
    img = level + contrast * (scene - scene.mean(axis=(1, 2, 3), keepdims=True))
    return d.finish(rng, img, noise=(0.0, 0.03))


def _gradients(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    """A dark-to-light ramp that is lightest towards one of 8 sides and corners."""
    n = len(labels)
    angle = labels * np.pi / 4 + rng.uniform(-0.2, 0.2, n)
    x, y = d.coords(size)
    ramp = x * np.cos(angle)[:, None, None] + y * np.sin(angle)[:, None, None]
    t = np.clip(ramp * rng.uniform(0.25, 0.5, n)[:, None, None] + 0.5, 0, 1)[..., None]
    dark, light = d.contrasting_colours(rng, n, gap=0.4)
    dark, light = np.minimum(dark, light), np.maximum(dark, light)
    img = dark[:, None, None] + (light - dark)[:, None, None] * t
    for _ in range(2):
        scale = rng.uniform(0.15, 0.35, n)
        cx, cy = _place(rng, scale)
        u, v, px = d.local(size, cx, cy, scale, rng.uniform(0, 2 * np.pi, n))
        shape = d.coverage(d.random_shapes(u, v, rng.integers(0, len(d.SHAPES), n)), px)
        img = d.paint(img, shape, rng.random((n, 3)))
    return d.finish(rng, img)


def _dice(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    n = len(labels)
    scale = rng.uniform(0.55, 0.85, n)
    cx, cy = _place(rng, scale * 1.1)
    u, v, px = d.local(size, cx, cy, scale, rng.uniform(-0.4, 0.4, n))
    body, pip = d.contrasting_colours(rng, n, gap=0.35)
    img = d.paint(
        d.background(rng, rng.random((n, 3)), size),
        d.coverage(d.box(u, v, 0.8, 0.8) - 0.2, px),
        body,
    )
    o = 0.5
    layouts = (
        [(0, 0)], [(-o, -o), (o, o)], [(-o, -o), (0, 0), (o, o)],
        [(-o, -o), (o, -o), (-o, o), (o, o)], [(-o, -o), (o, -o), (0, 0), (-o, o), (o, o)],
        [(-o, -o), (o, -o), (-o, 0), (o, 0), (-o, o), (o, o)],
    )  # fmt: skip
    radius = rng.uniform(0.14, 0.2, n)[:, None, None]
    pips = np.full(u.shape, 9.0)
    for k, layout in enumerate(layouts):
        sel = labels == k
        for pu, pv in layout:
            pips[sel] = np.minimum(pips[sel], np.hypot(u[sel] - pu, v[sel] - pv) - radius[sel])
    return d.finish(rng, d.paint(img, d.coverage(pips, px), pip))


def _thickness(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    """Outlines whose stroke is about 1, 1.7, 2.6 or 4 pixels wide."""
    n = len(labels)
    bands = np.array([(0.8, 1.1), (1.5, 1.9), (2.4, 2.9), (3.6, 4.3)]) * 2 / size
    width = rng.uniform(bands[labels, 0], bands[labels, 1])[:, None, None]
    scale = rng.uniform(0.45, 0.85, n)
    u, v, px, (img, fg) = _object_scene(rng, size, scale)
    sd = d.random_shapes(u, v, rng.integers(0, 3, n)) * scale[:, None, None]
    return d.finish(
        rng, d.paint(img, d.coverage(d.outline(sd, width), px * scale[:, None, None]), fg)
    )


def _stripes(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    """Stripes with a period of about 18, 12.5, 9, 6.5, 4.7 or 3.5 pixels."""
    n = len(labels)
    bands = np.array([(16.5, 19.5), (11.5, 13.5), (8.2, 9.6), (6.0, 7.0), (4.4, 5.0), (3.3, 3.7)])
    bands = bands * 2 / size
    period = rng.uniform(bands[labels, 0], bands[labels, 1])
    zeros = np.zeros(n)
    u, _, px = d.local(size, zeros, zeros, period, rng.uniform(0, np.pi, n))
    duty = rng.uniform(0.35, 0.65, n)[:, None, None]
    mask = d.coverage(np.abs(_frac(u + rng.random(n)[:, None, None]) - 0.5) - duty / 2, px)
    bg, fg = d.contrasting_colours(rng, n)
    return d.finish(rng, d.paint(d.background(rng, bg, size), mask, fg))


_POSITIVE = ("JOY", "FUN", "WIN", "YES", "WOW", "HUG", "TOP", "FAB")
_NEGATIVE = ("BAD", "SAD", "MAD", "ILL", "CRY", "LIE", "WAR", "UGH")
_WORDS = _glyph_task(list(_NEGATIVE + _POSITIVE), angle=0.05, scale=(0.9, 1.0))


def _sentiment(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    """A rendered word of negative (0) or positive (1) sentiment."""
    words = labels * len(_NEGATIVE) + rng.integers(0, len(_NEGATIVE), len(labels))
    return _WORDS(rng, words, size)


_ROTATED = d.text_bitmaps(list("FJLPR"))


def _rotation(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    """An asymmetric letter turned by label * 90 degrees clockwise."""
    n = len(labels)
    scale = rng.uniform(0.7, 0.9, n)
    cx, cy = _place(rng, scale, spread=0.2)
    angle = labels * np.pi / 2 + rng.uniform(-0.1, 0.1, n)
    u, v, px = d.local(size, cx, cy, scale, angle)
    bg, fg = d.contrasting_colours(rng, n)
    letter = rng.integers(0, len(_ROTATED), n)
    mask = d.glyph_mask(_ROTATED, letter, u, v, px, rng.uniform(0.4, 0.65, n))
    return d.finish(rng, d.paint(d.background(rng, bg, size), mask, fg))


def _noise(rng: d.Rng, labels: np.ndarray, size: int) -> np.ndarray:
    n = len(labels)
    bands = np.array([(0.0, 0.015), (0.05, 0.07), (0.12, 0.15), (0.22, 0.28)])
    sigma = rng.uniform(bands[labels, 0], bands[labels, 1])[:, None, None, None]
    img = _clutter(rng, n, size, count=2)
    return np.clip(img + sigma * rng.standard_normal(img.shape), 0, 1)


DATA_FILE = "evaluation/sandbox/data/tasks.json"
_DRAW: dict[str, tuple[Draw, int]] = {
    "digits": (_glyph_task(list("0123456789")), 10),
    "shapes": (_shapes, len(d.SHAPES)),
    "colours": (_colours, len(_COLOURS)),
    "textures": (_textures, 8),
    "letters": (_glyph_task(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")), 26),
    "counting": (_counting, 6),
    "orientation": (_orientation, 6),
    "arrows": (_arrows, 4),
    "positions": (_positions, 9),
    "faces": (_faces, 4),
    "sizes": (_sizes, 5),
    "seven_segment": (_seven_segment, 10),
    "brightness": (_brightness, 5),
    "gradients": (_gradients, 8),
    "dice": (_dice, 6),
    "thickness": (_thickness, 4),
    "stripes": (_stripes, 6),
    "sentiment": (_sentiment, 2),
    "rotation": (_rotation, 4),
    "noise": (_noise, 4),
}
"""Each task's drawing function and the number of classes it draws apart (labels
0..k-1): the data file must name exactly that many."""
_DRAWN_BY_NAME = {"shapes": tuple(d.SHAPES), "colours": tuple(_COLOURS)}
"""Tasks whose drawing code picks each class by its name: their class names must be these."""


def _template_ok(template: object) -> bool:
    """A string whose only replacement field is one plain ``{}`` (``{{`` escapes allowed)."""
    if not isinstance(template, str):
        return False
    try:
        fields = [f[1:] for f in string.Formatter().parse(template) if f[1] is not None]
    except ValueError:
        return False
    return fields == [("", "", None)]


def load_generators(text: str, where: str = DATA_FILE) -> tuple[TaskGenerator, ...]:
    """The generators of the tasks in ``text`` (the JSON of :data:`DATA_FILE`), in its order.

    Raises ``ValueError`` naming ``where`` (and the task) when the text is not JSON, a task
    has no drawing function (or a drawing function no entry), its keys are not
    ``classnames`` and ``templates`` (lists of strings), its class names are empty strings,
    repeated, not as many as its drawing function draws or (shapes, colours) not the
    drawing code's, or a template's only replacement field is not one ``{}``."""
    try:
        raw = {k: v for k, v in json.loads(text).items() if not k.startswith("_")}
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{where}: not a JSON object of tasks ({err})") from None
    if set(raw) != set(_DRAW):
        problems = [f"{what} {sorted(names)}" for what, names in (
            ("no drawing function for", set(raw) - set(_DRAW)),
            ("no entry for", set(_DRAW) - set(raw)),
        ) if names]  # fmt: skip
        raise ValueError(f"{where}: " + "; ".join(problems))
    out = []
    for name, spec in raw.items():
        draw, k = _DRAW[name]
        if not isinstance(spec, dict) or set(spec) != {"classnames", "templates"} or not all(
            isinstance(spec[key], list) for key in spec
        ):
            raise ValueError(f"{where}: task {name!r} needs lists classnames and templates")
        classnames, templates = tuple(spec["classnames"]), tuple(spec["templates"])
        if not all(isinstance(c, str) and c.strip() for c in classnames):
            raise ValueError(f"{where}: task {name!r} has a class name that is not a word")
        if len(classnames) != k or len(set(classnames)) != k:
            raise ValueError(
                f"{where}: task {name!r} draws {k} classes (labels 0..{k - 1}): name each "
                f"once, got {len(classnames)} names, {len(set(classnames))} distinct"
            )
        if _DRAWN_BY_NAME.get(name, classnames) != classnames:
            raise ValueError(f"{where}: task {name!r} must list {list(_DRAWN_BY_NAME[name])}")
        if not templates or not all(_template_ok(t) for t in templates):
            raise ValueError(
                f"{where}: every template of task {name!r} needs exactly one '{{}}' (the "
                "class name) and no other replacement field"
            )
        out.append(TaskGenerator(name, classnames, templates, draw))
    return tuple(out)


GENERATORS = load_generators(
    resources.files("evaluation.sandbox").joinpath("data", "tasks.json").read_text("utf-8")
)
_BY_NAME = {g.name: g for g in GENERATORS}


def get_generator(name: str) -> TaskGenerator:
    """The generator of task ``name``; an unknown name raises listing the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown sandbox task {name!r}; valid: {', '.join(_BY_NAME)}") from None

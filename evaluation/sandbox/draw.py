"""Vectorised drawing primitives for the sandbox tasks: coordinates, shapes, glyphs, colours.

Every function draws a whole batch at once. Per-image parameters are arrays of length N,
images are float arrays (N, H, W, 3) in [0, 1], and the canvas spans [-1, 1] on both axes
(x to the right, y downwards). Shapes are signed-distance functions of local coordinates
(negative inside, unit size), turned into anti-aliased coverage masks by :func:`coverage`.
"""

from __future__ import annotations

import numpy as np

Rng = np.random.Generator

# A 5x7 bitmap font ("#" = ink), drawn for this project.
FONT = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
}
GLYPH_ROWS, GLYPH_COLS = 7, 5


def text_bitmaps(texts: list[str]) -> np.ndarray:
    """Bitmaps (K, 7, W) of ``texts`` in :data:`FONT`, one blank column between letters,
    centred in a common width W."""
    rows = [
        np.concatenate(
            [
                np.array([[c == "#" for c in row] + [False] for row in FONT[ch]])
                for ch in text.upper()
            ],
            axis=1,
        )[:, :-1]
        for text in texts
    ]
    width = max(r.shape[1] for r in rows)
    out = np.zeros((len(texts), GLYPH_ROWS, width))
    for k, r in enumerate(rows):
        left = (width - r.shape[1]) // 2
        out[k, :, left : left + r.shape[1]] = r
    return out


def coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), each (1, size, size), spanning [-1, 1]."""
    t = (np.arange(size) + 0.5) / size * 2 - 1
    return t[None, None, :], t[None, :, None]


def local(
    size: int, cx: np.ndarray, cy: np.ndarray, scale: np.ndarray, angle: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local coordinates (u, v) of every pixel, (N, H, W), in a frame centred at (cx, cy),
    rotated by ``angle`` (radians, clockwise on screen) and scaled by ``scale``; also the
    size of one pixel in local units, (N, 1, 1)."""
    x, y = coords(size)
    cx, cy, scale = (np.asarray(a, float)[:, None, None] for a in (cx, cy, scale))
    angle = np.broadcast_to(np.asarray(angle, float), cx.shape[:1])[:, None, None]
    dx, dy = x - cx, y - cy
    c, s = np.cos(angle), np.sin(angle)
    return (c * dx + s * dy) / scale, (-s * dx + c * dy) / scale, 2.0 / (size * scale)


def coverage(sd: np.ndarray, px: np.ndarray | float) -> np.ndarray:
    """Anti-aliased mask of the region ``sd < 0`` (``px`` = one pixel in the same units)."""
    return np.clip(0.5 - sd / px, 0.0, 1.0)


def outline(sd: np.ndarray, width: np.ndarray | float) -> np.ndarray:
    """Signed distance of a stroke of ``width`` centred on the boundary of ``sd``."""
    return np.abs(sd) - width / 2


# Signed distances of unit shapes in local coordinates (u, v).
def disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.hypot(u, v) - 1.0


def box(u: np.ndarray, v: np.ndarray, w: float = 1.0, h: float = 1.0) -> np.ndarray:
    return np.maximum(np.abs(u) - w, np.abs(v) - h)


def polygon(u: np.ndarray, v: np.ndarray, sides: int) -> np.ndarray:
    """Regular polygon with circumradius 1 and a vertex pointing up."""
    phases = 2 * np.pi * (np.arange(sides) + 0.5) / sides - np.pi / 2
    edges = [u * np.cos(p) + v * np.sin(p) for p in phases]
    return np.max(edges, axis=0) - np.cos(np.pi / sides)


def star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """Star with outer radius 1, as a radial profile (approximate distance)."""
    phi = np.arctan2(u, -v) * points / (2 * np.pi)
    tri = np.abs(phi - np.round(phi)) * 2  # 0 at a tip, 1 between tips
    return (np.hypot(u, v) - (1 - (1 - inner) * tri)) * 0.7


def cross(u: np.ndarray, v: np.ndarray, arm: float = 0.33) -> np.ndarray:
    return np.minimum(box(u, v, 1.0, arm), box(u, v, arm, 1.0))


def ring(u: np.ndarray, v: np.ndarray, width: float = 0.45) -> np.ndarray:
    return np.abs(np.hypot(u, v) - 1 + width / 2) - width / 2


def crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(disc(u, v), -disc((u - 0.45) / 0.85, (v + 0.1) / 0.85) * 0.85)


def heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    lobes = np.minimum(np.hypot(u + 0.45, v + 0.35), np.hypot(u - 0.45, v + 0.35)) - 0.55
    tip = polygon(u / 1.05, -(v - 0.05) / 0.95 - 0.02, 3) * 0.95
    return np.minimum(lobes, np.maximum(tip, v - 1.0))


def segment(
    u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float], width: float
) -> np.ndarray:
    """Capsule of ``width`` around the segment from point ``a`` to point ``b``."""
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = np.clip(((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(u - ax - t * dx, v - ay - t * dy) - width / 2


def arrow(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Arrow pointing right (+u) from u = -1 to u = 1: a shaft and a triangular head."""
    shaft = box(u + 0.45, v, 0.55, 0.15)
    head = polygon(v / 0.75, -(u - 0.25) / 0.75, 3) * 0.75
    return np.minimum(shaft, head)


SHAPES = {
    "circle": disc,
    "square": lambda u, v: box(u, v, 0.82, 0.82),
    "triangle": lambda u, v: polygon(u, v - 0.2, 3),
    "star": star,
    "cross": cross,
    "ring": ring,
    "crescent": crescent,
    "heart": heart,
}


def random_shapes(u: np.ndarray, v: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Signed distance, per image, of the shape ``list(SHAPES)[kinds[i]]``."""
    out = np.empty_like(u)
    for k, fn in enumerate(SHAPES.values()):
        sel = kinds == k
        if sel.any():
            out[sel] = fn(u[sel], v[sel])
    return out


def bitmap(
    bitmaps: np.ndarray, idx: np.ndarray, u: np.ndarray, v: np.ndarray, px: np.ndarray
) -> np.ndarray:
    """Bilinear sample of ``bitmaps[idx[i]]`` (K, R, C) mapped onto v in [-1, 1] (rows) and
    u in [-C/R, C/R] (columns); zero outside. Returns values in [0, 1] and the pixel size in
    bitmap cells, so that ``coverage(threshold - value, px_cells)`` gives crisp strokes."""
    _, rows, cols = bitmaps.shape
    padded = np.pad(bitmaps.astype(float), ((0, 0), (1, 1), (1, 1)))
    r = np.clip((v + 1) / 2 * rows + 0.5, 0.0, rows + 1 - 1e-6)
    c = np.clip((u * rows / cols + 1) / 2 * cols + 0.5, 0.0, cols + 1 - 1e-6)
    r0, c0 = np.floor(r).astype(int), np.floor(c).astype(int)
    r1, c1 = np.minimum(r0 + 1, rows + 1), np.minimum(c0 + 1, cols + 1)
    fr, fc = r - r0, c - c0
    k = idx[:, None, None]
    top = padded[k, r0, c0] * (1 - fc) + padded[k, r0, c1] * fc
    bottom = padded[k, r1, c0] * (1 - fc) + padded[k, r1, c1] * fc
    return top * (1 - fr) + bottom * fr, px * rows / 2


def glyph_mask(
    bitmaps: np.ndarray,
    idx: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    px: np.ndarray,
    weight: np.ndarray,
) -> np.ndarray:
    """Coverage of glyph strokes; ``weight`` in (0, 1) thickens strokes as it grows."""
    value, cell_px = bitmap(bitmaps, idx, u, v, px)
    return coverage((1 - weight)[:, None, None] - value, cell_px)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N, 3) RGB from hue in turns [0, 1), saturation and value in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    return v[:, None] - (v * s)[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def contrasting_colours(rng: Rng, n: int, gap: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Random (background, foreground) colours, (N, 3) each, whose every channel differs
    by at least ``gap`` (which side is dark is random)."""
    dark_bg = rng.random(n) < 0.5
    low = rng.uniform(0.0, (1 - gap) / 2, (n, 3))
    high = rng.uniform((1 + gap) / 2, 1.0, (n, 3))
    bg = np.where(dark_bg[:, None], low, high)
    fg = np.where(dark_bg[:, None], high, low)
    return bg, fg


def smooth_noise(rng: Rng, n: int, size: int, cells: int = 4) -> np.ndarray:
    """Low-frequency noise (N, H, W) in about [-1, 1]: a bilinear blow-up of a random grid."""
    grid = rng.uniform(-1, 1, (n, cells + 1, cells + 1))
    t = (np.arange(size) + 0.5) / size * cells
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = grid[:, i] * (1 - f)[None, :, None] + grid[:, i + 1] * f[None, :, None]
    return (rows[:, :, i] * (1 - f) + rows[:, :, i + 1] * f).astype(np.float32)


def fill(colour: np.ndarray, size: int) -> np.ndarray:
    """Float32 images (N, H, W, 3) of one colour each."""
    shape = (len(colour), size, size, 3)
    return np.broadcast_to(colour[:, None, None, :].astype(np.float32), shape).copy()


def background(rng: Rng, colour: np.ndarray, size: int, blotch: float = 0.12) -> np.ndarray:
    """Plain backgrounds of ``colour`` with random low-frequency blotches up to ``blotch``."""
    n = len(colour)
    amount = rng.uniform(0, blotch, (n, 1, 1, 1)).astype(np.float32)
    return fill(colour, size) + amount * smooth_noise(rng, n, size)[..., None]


def paint(images: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Paint ``colour`` (N, 3) over ``images`` (in place) where ``mask`` (N, H, W) covers them."""
    m = mask[..., None].astype(images.dtype)
    images += m * (colour[:, None, None, :].astype(images.dtype) - images)
    return images


def finish(rng: Rng, images: np.ndarray, noise: tuple[float, float] = (0.0, 0.06)) -> np.ndarray:
    """Add per-pixel Gaussian noise with a random std in ``noise`` and clip to [0, 1]."""
    sigma = rng.uniform(*noise, (len(images), 1, 1, 1)).astype(np.float32)
    images = images + sigma * rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(images, 0.0, 1.0, out=images)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images (N, H, W, 3) in [0, 1] to uint8 (N, 3, H, W)."""
    return np.ascontiguousarray(
        np.round(np.clip(images, 0, 1) * 255).astype(np.uint8).transpose(0, 3, 1, 2)
    )

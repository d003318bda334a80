"""A small procedural renderer: shapes on backgrounds, anti-aliased by supersampling.

Both the tiny ViT's pretraining source task and the mini benchmark's structured tasks are
drawn with it, from numpy generators, so every image is reproducible from a seed.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

SUPERSAMPLE = 4


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (v >= -0.5) & (v <= 1.0 - np.sqrt(3.0) * np.abs(u))


def _arrow(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    shaft = (np.abs(v) <= 0.22) & (u >= -1.0) & (u <= 0.1)
    head = (u >= 0.1) & (u <= 1.0) & (np.abs(v) <= 0.75 * (1.0 - u) / 0.9)
    return shaft | head


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = 1.15 * u, 1.15 * v + 0.25
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    radius, angle = np.hypot(u, v), np.arctan2(v, u)
    return radius <= 0.45 + 0.55 * np.abs(np.cos(2.5 * angle)) ** 3


def _hexagon(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(v) <= 0.87) & (np.sqrt(3.0) * np.abs(u) + np.abs(v) <= np.sqrt(3.0))


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v >= 0.6)


# Implicit shapes on unit coordinates (u right, v up); `symmetry` is the order of rotational
# symmetry (0: a circle, orientation undefined).
SHAPES = {
    "circle": (lambda u, v: u * u + v * v <= 1.0, 0),
    "square": (lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.8, 4),
    "triangle": (_triangle, 3),
    "plus": (lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0)), 4),
    "ring": (lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.35), 0),
    "diamond": (lambda u, v: np.abs(u) + np.abs(v) <= 1.0, 2),
    "ellipse": (lambda u, v: u * u + 4.0 * v * v <= 1.0, 2),
    "arrow": (_arrow, 1),
    "heart": (_heart, 1),
    "star": (_star, 5),
    "cross": (lambda u, v: (np.abs(u - v) <= 0.35) & (np.abs(u + v) <= 1.4) | (np.abs(u + v) <= 0.35) & (np.abs(u - v) <= 1.4), 4),
    "hexagon": (_hexagon, 6),
    "crescent": (_crescent, 1),
}


# Fills on the shape's own coordinates (they turn with it): True where the second colour shows.
PATTERNS = {
    "solid": lambda u, v, inside: np.zeros_like(u, dtype=bool),
    "stripes": lambda u, v, inside: np.sin(7.0 * u) > 0.0,
    "checks": lambda u, v, inside: (np.floor(2.2 * u) + np.floor(2.2 * v)) % 2 == 0,
    "dots": lambda u, v, inside: (np.mod(u * 2.0, 1.0) - 0.5) ** 2 + (np.mod(v * 2.0, 1.0) - 0.5) ** 2 <= 0.06,
    "outline": lambda u, v, inside: inside(u / 0.62, v / 0.62),
}


@dataclass
class Sprite:
    shape: str
    x: float  # centre in [-1, 1], left to right
    y: float  # centre in [-1, 1], bottom to top
    scale: float  # half-size as a fraction of the image half-width
    angle: float  # radians, counter-clockwise
    colour: tuple[float, float, float]  # RGB in [0, 1]
    shaded: bool = False  # a radial highlight, like a lit sphere
    pattern: str = "solid"  # one of PATTERNS, drawn in a dark shade of `colour`


class Canvas:
    """Supersampled RGB canvas of `size` x `size` pixels, coordinates in [-1, 1]."""

    def __init__(self, size: int, background: np.ndarray) -> None:
        fine = size * SUPERSAMPLE
        axis = (np.arange(fine) + 0.5) / fine * 2.0 - 1.0
        self.size = size
        self.x, self.y = np.meshgrid(axis, -axis)
        self.pixels = np.broadcast_to(background, (fine, fine, 3)).astype(np.float32).copy()

    def draw(self, sprite: Sprite) -> np.ndarray:
        """Paint `sprite`; returns its (supersampled) mask."""
        inside, _ = SHAPES[sprite.shape]
        c, s = np.cos(sprite.angle), np.sin(sprite.angle)
        dx, dy = (self.x - sprite.x) / sprite.scale, (self.y - sprite.y) / sprite.scale
        u, v = c * dx + s * dy, -s * dx + c * dy
        mask = inside(u, v)
        colour = np.asarray(sprite.colour, dtype=np.float32)
        if sprite.shaded:
            light = np.clip(1.0 - 0.6 * ((u + 0.35) ** 2 + (v - 0.35) ** 2), 0.35, 1.0)[..., None]
            self.pixels[mask] = (colour * light + 0.25 * (light > 0.9))[mask].clip(0, 1)
        else:
            self.pixels[mask] = colour
        if sprite.pattern != "solid":
            second = mask & PATTERNS[sprite.pattern](u, v, inside)
            self.pixels[second] = colour * 0.3
        return mask

    def image(self) -> np.ndarray:
        """uint8 [size, size, 3], averaged over each pixel's supersamples."""
        fine = self.pixels.reshape(self.size, SUPERSAMPLE, self.size, SUPERSAMPLE, 3).mean(axis=(1, 3))
        return (fine * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def hue_colour(hue: float, saturation: float = 0.85, value: float = 0.95) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(hue % 1.0, saturation, value)


BACKGROUNDS = ("flat", "gradient", "noise", "stripes")


def background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A [fine, fine, 3] float background of one of BACKGROUNDS' kinds, dim enough for sprites."""
    fine = size * SUPERSAMPLE
    base = rng.uniform(0.05, 0.45, size=3).astype(np.float32)
    if kind == "flat":
        return np.broadcast_to(base, (fine, fine, 3))
    ramp = np.linspace(0.0, 1.0, fine, dtype=np.float32)
    if kind == "gradient":
        other = rng.uniform(0.05, 0.45, size=3).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]) * 0.5 + 0.25
        return base + (other - base) * t[..., None]
    if kind == "noise":
        coarse = rng.uniform(-0.15, 0.15, size=(size // 4, size // 4, 1)).astype(np.float32)
        noise = np.kron(coarse, np.ones((4 * SUPERSAMPLE, 4 * SUPERSAMPLE, 1), dtype=np.float32))
        return (base + noise).clip(0, 1)
    period = rng.uniform(0.15, 0.4)
    angle = rng.uniform(0, np.pi)
    t = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    stripes = (np.floor(t / period) % 2).astype(np.float32)[..., None]
    return (base + 0.12 * stripes).clip(0, 1)


TEXTURES = ("stripes", "checks", "dots", "waves", "bricks", "zigzag", "grid", "blobs")


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A [fine, fine, 3] float image filled with one of TEXTURES' kinds, at a random scale, angle and colours."""
    fine = size * SUPERSAMPLE
    ink, paper = (np.asarray(hue_colour(float(rng.uniform()), value=v), dtype=np.float32) for v in (0.35, 0.95))
    axis = (np.arange(fine) + 0.5) / fine * 2.0 - 1.0
    x, y = np.meshgrid(axis, -axis)
    angle = rng.uniform(0, np.pi)
    u, v = np.cos(angle) * x + np.sin(angle) * y, -np.sin(angle) * x + np.cos(angle) * y
    period = rng.uniform(0.3, 0.5)
    a, b = u / period, v / period
    if kind == "stripes":
        mask = np.mod(a, 1.0) < 0.5
    elif kind == "checks":
        mask = (np.floor(a) + np.floor(b)) % 2 == 0
    elif kind == "dots":
        mask = (np.mod(a, 1.0) - 0.5) ** 2 + (np.mod(b, 1.0) - 0.5) ** 2 < 0.07
    elif kind == "waves":
        mask = np.mod(a + 0.35 * np.sin(2.0 * np.pi * b / 2.0), 1.0) < 0.45
    elif kind == "bricks":
        row = np.floor(b * 2.0)
        mask = (np.mod(b * 2.0, 1.0) < 0.2) | (np.mod(a + 0.5 * (row % 2), 1.0) < 0.12)
    elif kind == "zigzag":
        mask = np.mod(a + np.abs(np.mod(b, 1.0) - 0.5), 1.0) < 0.4
    elif kind == "grid":
        mask = (np.mod(a, 1.0) < 0.15) | (np.mod(b, 1.0) < 0.15)
    elif kind == "blobs":
        coarse = rng.uniform(0.0, 1.0, size=(5, 5)).astype(np.float32)
        grid = np.linspace(0, 4, fine)
        row = np.array([np.interp(grid, np.arange(5), line) for line in coarse])
        smooth = np.array([np.interp(grid, np.arange(5), column) for column in row.T]).T
        mask = smooth > 0.5
    else:
        raise ValueError(f"unknown texture '{kind}'; expected one of {', '.join(TEXTURES)}")
    return np.where(mask[..., None], ink, paper).astype(np.float32)

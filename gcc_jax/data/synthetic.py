"""``synthetic_crowd``: crowd-like images with known head positions, generated from a seed.

No download and no build step: example ``i`` of a split is drawn from
``numpy.random.default_rng([seed, split, i])``, so any example can be regenerated on its own
and every process sees the same data. Each image has

* a background: a vertical two-colour gradient (sky / ground) with low- and mid-frequency
  texture and pixel noise;
* clutter that is *not* people: rectangles, thin poles, large blobs;
* people drawn far-to-near (nearer ones occlude farther ones): a torso ellipse in a clothing
  colour and a round head (skin tone with a darker hair cap). The head radius grows linearly
  from ``head_radius_far`` at the top row to ``head_radius_near`` at the bottom row
  (perspective), times a per-image and a per-person factor;
* a varied number of people: 0 with probability ``empty_fraction``, otherwise log-uniform in
  ``[min_people, max_people]`` candidates, placed in 1–4 Gaussian groups plus scattered
  individuals; candidates whose head would overlap an earlier head are left out, so every
  annotated head is visible (dense groups end up a little below the drawn count).

The annotated point of a person is the centre of its head, ``(x, y)`` pixels, like the real
datasets. ``python -m gcc_jax.data.render_synthetic --out DIR --num 8`` writes examples to PNG.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

__all__ = ["SPLITS", "SyntheticCrowdOptions", "generate_example"]

SPLITS = ("train", "val", "test")

_SKIN = np.array([[233, 192, 150], [210, 160, 115], [170, 120, 80], [120, 80, 50], [90, 60, 40]], np.float32)
_HAIR = np.array([[25, 20, 18], [60, 40, 25], [110, 80, 50], [40, 40, 45], [150, 140, 130]], np.float32)


@dataclasses.dataclass(frozen=True)
class SyntheticCrowdOptions:
    """Options of the synthetic crowd source (a plain dataclass a ml_collections config can hold
    as a dict: see :meth:`from_value` and :meth:`to_dict`).

    Attributes:
      seed: master seed; the same options always give the same images.
      height: image height in pixels.
      width: image width in pixels.
      num_train: number of ``train`` images.
      num_val: number of ``val`` images.
      num_test: number of ``test`` images.
      min_people: fewest people in a non-empty image.
      max_people: most people in an image (the density range is ``[min_people, max_people]``).
      empty_fraction: probability that an image has nobody in it.
      head_radius_far: head radius in pixels at the top row (far away).
      head_radius_near: head radius in pixels at the bottom row (near the camera).
      clutter: most distractor shapes per image (rectangles, poles, blobs).
      noise_std: standard deviation of the per-pixel noise, in 0–255 units.
    """

    seed: int = 0
    height: int = 256
    width: int = 256
    num_train: int = 320
    num_val: int = 64
    num_test: int = 64
    min_people: int = 1
    max_people: int = 150
    empty_fraction: float = 0.1
    head_radius_far: float = 2.5
    head_radius_near: float = 8.0
    clutter: int = 12
    noise_std: float = 4.0

    def __post_init__(self):
        if self.height < 16 or self.width < 16:
            raise ValueError(f"height and width must be >= 16, got {self.height}x{self.width}")
        if min(self.num_train, self.num_val, self.num_test) < 0:
            raise ValueError("num_train, num_val and num_test must be >= 0")
        if not 1 <= self.min_people <= self.max_people:
            raise ValueError(f"need 1 <= min_people <= max_people, got {self.min_people}, {self.max_people}")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ValueError(f"empty_fraction must lie in [0, 1], got {self.empty_fraction}")
        if not 0.5 <= self.head_radius_far <= self.head_radius_near:
            raise ValueError(
                f"need 0.5 <= head_radius_far <= head_radius_near, got {self.head_radius_far}, {self.head_radius_near}"
            )
        if self.clutter < 0 or self.noise_std < 0:
            raise ValueError("clutter and noise_std must be >= 0")

    @classmethod
    def from_value(cls, value: "SyntheticCrowdOptions | Mapping[str, Any] | None") -> "SyntheticCrowdOptions":
        """Options from ``None`` (defaults), a dict / ``ConfigDict`` of fields, or options.

        Raises:
          ValueError: an unknown field name.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        fields = dict(value.items()) if hasattr(value, "items") else None
        if fields is None:
            raise ValueError(f"synthetic options must be a dict or SyntheticCrowdOptions, got {type(value).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown synthetic option(s) {unknown}; known: {sorted(known)}")
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (e.g. for a ``ml_collections.ConfigDict``)."""
        return dataclasses.asdict(self)

    def num_examples(self, split: str) -> int:
        """Number of images in ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        _check_split(split)
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"synthetic_crowd split must be one of {SPLITS}, got {split!r}")


def generate_example(options: SyntheticCrowdOptions, split: str, index: int) -> dict[str, Any]:
    """Draws example ``index`` of ``split``.

    Args:
      options: the :class:`SyntheticCrowdOptions`.
      split: ``"train"``, ``"val"`` or ``"test"``.
      index: ``0 ≤ index < options.num_examples(split)``.

    Returns:
      dict with ``image`` uint8 ``[height, width, 3]``, ``points`` float32 ``[n, 2]`` head
      centres ``(x, y)`` in pixels (inside the image), ``filename`` str.
    """
    _check_split(split)
    if not 0 <= index < options.num_examples(split):
        raise ValueError(f"index {index} out of range for split {split!r} of {options.num_examples(split)} images")
    rng = np.random.default_rng([options.seed, SPLITS.index(split), index])
    h, w = options.height, options.width
    canvas = _background(rng, h, w)
    _draw_clutter(rng, canvas, options)
    points = _draw_people(rng, canvas, options)
    canvas += np.float32(options.noise_std) * rng.standard_normal(canvas.shape, dtype=np.float32)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return {"image": image, "points": points, "filename": f"synthetic_{split}_{index:05d}.png"}


def _smooth_noise(rng, h, w, cells, channels):
    """Bilinearly upsampled ``cells × cells`` random grid in [-1, 1]: smooth texture."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1, channels)).astype(np.float32)
    # Separable linear interpolation as two small matrix products: [h, g] · grid · [g, w].
    rows, cols = _interpolation_matrix(h, cells), _interpolation_matrix(w, cells)
    return np.stack([rows @ grid[..., c] @ cols.T for c in range(channels)], axis=-1)


def _interpolation_matrix(size, cells):
    positions = np.linspace(0, cells, size, dtype=np.float32)
    weights = np.maximum(1.0 - np.abs(positions[:, None] - np.arange(cells + 1, dtype=np.float32)), 0.0)
    return weights.astype(np.float32)


def _background(rng, h, w):
    sky = rng.uniform(60, 220, 3).astype(np.float32)
    ground = rng.uniform(40, 200, 3).astype(np.float32)
    horizon = rng.uniform(0.0, 0.35) * h
    rows = np.arange(h, dtype=np.float32)[:, None, None]
    blend = np.clip((rows - horizon) / max(h * 0.15, 1.0), 0.0, 1.0)
    canvas = sky * (1 - blend) + ground * blend
    canvas = canvas + rng.uniform(10, 30) * _smooth_noise(rng, h, w, 4, 3)
    canvas = canvas + rng.uniform(4, 14) * _smooth_noise(rng, h, w, max(h // 12, 2), 1)
    return np.broadcast_to(canvas, (h, w, 3)).astype(np.float32).copy()


def _draw_clutter(rng, canvas, options):
    h, w = canvas.shape[:2]
    for _ in range(rng.integers(0, options.clutter + 1)):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        kind = rng.integers(3)
        if kind == 0:  # box / sign / window
            bh, bw = rng.uniform(6, 0.3 * h), rng.uniform(6, 0.3 * w)
        elif kind == 1:  # pole or bar
            bh, bw = (rng.uniform(0.2 * h, 0.8 * h), rng.uniform(2, 5)) if rng.random() < 0.5 else (rng.uniform(2, 5), rng.uniform(0.2 * w, 0.8 * w))
        else:  # large soft blob (tree, bush): much larger than any head
            radius = rng.uniform(3.0, 5.0) * options.head_radius_near
            _blend_ellipse(canvas, rng.uniform(0, w), rng.uniform(0, h), radius * rng.uniform(1, 1.6), radius, colour, softness=3.0)
            continue
        top, left = rng.uniform(-bh / 2, h - bh / 2), rng.uniform(-bw / 2, w - bw / 2)
        r0, r1 = int(max(top, 0)), int(min(top + bh, h))
        c0, c1 = int(max(left, 0)), int(min(left + bw, w))
        if r1 > r0 and c1 > c0:
            canvas[r0:r1, c0:c1] = 0.3 * canvas[r0:r1, c0:c1] + 0.7 * colour


def _blend_ellipse(canvas, cx, cy, rx, ry, colour, softness=1.0, mask=None):
    """Alpha-blends a filled ellipse with an anti-aliased edge (``softness`` px wide)."""
    h, w = canvas.shape[:2]
    r0, r1 = int(max(np.floor(cy - ry - softness), 0)), int(min(np.ceil(cy + ry + softness) + 1, h))
    c0, c1 = int(max(np.floor(cx - rx - softness), 0)), int(min(np.ceil(cx + rx + softness) + 1, w))
    if r1 <= r0 or c1 <= c0:
        return
    ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - cy
    xs = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - cx
    # Signed distance to the boundary, approximated by scaling the radial distance.
    radial = np.sqrt((xs / rx) ** 2 + (ys / ry) ** 2)
    alpha = np.clip((1.0 - radial) * min(rx, ry) / softness + 0.5, 0.0, 1.0)
    if mask is not None:
        alpha = alpha * mask(ys, xs)
    patch = canvas[r0:r1, c0:c1]
    patch += alpha[..., None] * (colour - patch)


def _draw_people(rng, canvas, options):
    h, w = canvas.shape[:2]
    if rng.random() < options.empty_fraction:
        return np.zeros([0, 2], np.float32)
    lo, hi = np.log(options.min_people), np.log(options.max_people + 1)
    count = int(min(np.exp(rng.uniform(lo, hi)), options.max_people))
    groups = rng.integers(1, 5)
    centres = np.stack([rng.uniform(0, w, groups), rng.uniform(0.25 * h, h, groups)], axis=-1)
    spreads = rng.uniform(0.06, 0.25, groups) * min(h, w)
    scattered = rng.random(count) < 0.3
    member = rng.integers(groups, size=count)
    xy = centres[member] + rng.normal(size=(count, 2)) * spreads[member, None]
    uniform = np.stack([rng.uniform(0, w, count), rng.uniform(0.1 * h, h, count)], axis=-1)
    xy = np.where(scattered[:, None], uniform, xy)
    # Heads stay inside the image (the annotated points of real datasets do).
    xy[:, 0] = np.clip(xy[:, 0], 0.5, w - 0.5)
    xy[:, 1] = np.clip(xy[:, 1], 0.5, h - 0.5)
    image_scale = rng.uniform(0.8, 1.25)
    far, near = options.head_radius_far, options.head_radius_near
    radii = (far + (near - far) * xy[:, 1] / h) * image_scale * rng.uniform(0.85, 1.15, count)
    # Heads never overlap, so every annotated head is visible: a candidate closer than
    # 0.9 (r_i + r_j) to an accepted head is rejected (dense groups end up a little thinner).
    accepted = []
    for i in range(count):
        if accepted:
            others = np.asarray(accepted)
            gaps = np.hypot(*(xy[others] - xy[i]).T) - 0.9 * (radii[others] + radii[i])
            if gaps.min() < 0:
                continue
        accepted.append(i)
    keep = np.asarray(accepted, int)
    order = keep[np.argsort(xy[keep, 1], kind="stable")]  # far (top) first, near people drawn over them
    xy, radii = xy[order], radii[order]
    for (x, y), radius in zip(xy, radii):
        clothes = rng.uniform(0, 255, 3).astype(np.float32)
        skin = _SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 8, 3).astype(np.float32)
        hair = _HAIR[rng.integers(len(_HAIR))]
        # Torso: shoulders start just below the head.
        _blend_ellipse(canvas, x, y + 2.3 * radius, 1.9 * radius, 1.6 * radius, clothes)
        _blend_ellipse(canvas, x, y, radius, radius * 1.1, skin)
        # Hair cap: the upper part of the head, fading in above the eyes.
        _blend_ellipse(
            canvas, x, y, radius, radius * 1.1, hair,
            mask=lambda ys, xs, r=radius: np.clip(-(ys + 0.1 * r) / (0.3 * r), 0.0, 1.0),
        )
    return xy.astype(np.float32)

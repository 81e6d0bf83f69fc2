"""The synthetic text-to-video task: attribute sets, its configuration, and captions.

A video shows one (or two) flat-coloured, anti-aliased shapes on a plain background, moving in a
straight line at constant speed. Its caption names every attribute, e.g.
``"a red circle moving left on a black background"`` or, when the task has several speeds,
``"two blue squares moving quickly up on a white background"``.

:class:`SyntheticTaskConfig` (frozen, validated) chooses which attribute values the task uses;
:func:`all_captions` enumerates every combination. The default is the task we judge learnable by
a ~1M-parameter DiT in a few hours of 2-core CPU: 3 shapes x 4 colours x 2 backgrounds x 4
directions = 96 captions, one object, one speed, 8 frames of 32 x 32.
"""

from __future__ import annotations

import itertools
import math
import numbers
import re
from collections.abc import Iterator
from dataclasses import dataclass

from asymrnr_compile._validate import check_choice

# --------------------------------------------------------------------------------------------
# Attribute vocabularies (everything a config may choose from). The vocabulary of token ids is
# built from these full tables, so it does not depend on the config: a checkpoint trained on one
# config can read captions of any other.
# --------------------------------------------------------------------------------------------

#: RGB of every colour name, in the video value range [-1, 1]. Only saturated corners of the RGB
#: cube, so any two entries differ by at least 2.0 (one channel flipped): colour detection by
#: nearest entry has a wide margin.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
    "magenta": (1.0, -1.0, 1.0),
    "cyan": (-1.0, 1.0, 1.0),
    "white": (1.0, 1.0, 1.0),
    "black": (-1.0, -1.0, -1.0),
}

#: Shapes, each drawn inside an ``object_size`` x ``object_size`` box (the triangle points up,
#: the diamond is the square turned 45 degrees). Fill ratios of that box: square 1.0,
#: circle pi/4 = 0.785, triangle and diamond 0.5.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

#: Direction -> unit displacement (dy, dx) in image coordinates (y grows downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (0, -1),
    "right": (0, 1),
    "up": (-1, 0),
    "down": (1, 0),
}

#: Speed word -> pixels per frame.
SPEEDS: dict[str, float] = {"slowly": 1.0, "steadily": 1.5, "quickly": 2.5}

#: Object count -> the word that starts the caption.
COUNT_WORDS: dict[int, str] = {1: "a", 2: "two"}

#: Margin in pixels kept free between an object's bounding box and the frame edge over the whole
#: clip (the anti-aliased edge ramp is half a pixel wide, so border pixels stay pure background).
EDGE_MARGIN_PX = 1.0

#: Gap in pixels kept between the boxes of two objects (count 2), so that they never touch and
#: connected-component counting is exact on ground truth.
OBJECT_GAP_PX = 2.0

#: Smallest object size: below 6 px a triangle and a circle differ by a handful of pixels.
MIN_OBJECT_SIZE_PX = 6.0

#: Smallest RGB distance (Euclidean, range [-1, 1]) between any object colour and any
#: background of a config. The palette's entries differ by >= 2.0; the check only rejects a
#: colour that is also a background, which would make the object invisible.
MIN_CONTRAST = 1.0


def _plural(shape: str) -> str:
    return shape + "s"


@dataclass(frozen=True)
class Caption:
    """The attributes of one video; :attr:`text` is its caption.

    ``speed`` is None when the task has a single speed (then the caption does not name it).
    """

    shape: str
    colour: str
    background: str
    direction: str
    count: int = 1
    speed: str | None = None

    @property
    def text(self) -> str:
        """E.g. ``"a red circle moving left on a black background"``."""
        shape = self.shape if self.count == 1 else _plural(self.shape)
        motion = self.direction if self.speed is None else f"{self.speed} {self.direction}"
        count = COUNT_WORDS.get(self.count, str(self.count))
        return f"{count} {self.colour} {shape} moving {motion} on a {self.background} background"

    def __str__(self) -> str:
        return self.text

    @classmethod
    def from_text(cls, text: str) -> Caption:
        """Parse a caption of the task grammar; raise ValueError on anything else."""
        count_words = "|".join(COUNT_WORDS.values())
        colours = "|".join(PALETTE)
        shapes = "|".join(s for shape in SHAPES for s in (_plural(shape), shape))
        pattern = (
            rf"({count_words}) ({colours}) ({shapes}) moving (?:({'|'.join(SPEEDS)}) )?"
            rf"({'|'.join(DIRECTIONS)}) on a ({colours}) background"
        )
        match = re.fullmatch(pattern, " ".join(text.strip().lower().split()))
        if match is None:
            raise ValueError(f"text is not a caption of the synthetic task grammar: {text!r}")
        count_word, colour, shape, speed, direction, background = match.groups()
        count = next(n for n, w in COUNT_WORDS.items() if w == count_word)
        plural = shape.endswith("s") and shape[:-1] in SHAPES
        if plural != (count > 1):
            raise ValueError(f"count word {count_word!r} and shape {shape!r} disagree in {text!r}")
        return cls(
            shape=shape[:-1] if plural else shape,
            colour=colour,
            background=background,
            direction=direction,
            count=count,
            speed=speed,
        )


def _check_names(field: str, value: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{field} must be a non-empty tuple of names from {allowed!r}, "
                         f"got {value!r}")
    for item in value:
        check_choice(f"{field} entry", item, allowed)
    if len(set(value)) != len(value):
        raise ValueError(f"{field} must not repeat a name, got {tuple(value)!r}")
    return tuple(value)


def _check_positive_int(field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class SyntheticTaskConfig:
    """Attribute sets and geometry of the synthetic text-to-video task.

    Videos are ``(3, frames, height, width)`` RGB in [-1, 1]. Every attribute set is a tuple of
    names from the module tables (:data:`PALETTE`, :data:`SHAPES`, :data:`DIRECTIONS`,
    :data:`SPEEDS`, :data:`COUNT_WORDS`); its order is the enumeration order of
    :func:`all_captions`.

    Attributes:
        frames, height, width: video size; frames >= 2, height and width >= 8. Default 8x32x32.
        shapes: default circle, square, triangle (fill ratios 0.79 / 1.0 / 0.5: far apart).
        colours: object colours; default red, green, blue, yellow.
        backgrounds: default black, white. No background may also be an object colour.
        directions: default all four (left, right, up, down).
        counts: objects per video, from {1, 2}; default (1,). With 2, the objects move side by
            side (separated across the direction of motion).
        speeds: default ("steadily",) = 1.5 px/frame: 10.5 px (2.6 patches of 4) over 8 frames.
            With one speed the caption does not name it.
        object_size: side of each object's box in pixels; default 12 (3 patches of 4; the shape
            covers 72-144 px). Must leave room for the motion: validated against every
            direction and speed.
    """

    frames: int = 8
    height: int = 32
    width: int = 32
    shapes: tuple[str, ...] = ("circle", "square", "triangle")
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    backgrounds: tuple[str, ...] = ("black", "white")
    directions: tuple[str, ...] = ("left", "right", "up", "down")
    counts: tuple[int, ...] = (1,)
    speeds: tuple[str, ...] = ("steadily",)
    object_size: float = 12.0

    def __post_init__(self) -> None:
        _check_positive_int("frames", self.frames, 2)
        _check_positive_int("height", self.height, 8)
        _check_positive_int("width", self.width, 8)
        for field, allowed in (
            ("shapes", SHAPES),
            ("colours", tuple(PALETTE)),
            ("backgrounds", tuple(PALETTE)),
            ("directions", tuple(DIRECTIONS)),
            ("speeds", tuple(SPEEDS)),
        ):
            object.__setattr__(self, field, _check_names(field, getattr(self, field), allowed))
        counts = self.counts
        if isinstance(counts, (str, bytes)) or not isinstance(counts, (tuple, list)) or not counts:
            raise ValueError(f"counts must be a non-empty tuple from {tuple(COUNT_WORDS)}, "
                             f"got {counts!r}")
        for c in counts:
            if isinstance(c, bool) or c not in COUNT_WORDS:
                raise ValueError(f"counts entries must be in {tuple(COUNT_WORDS)}, got {c!r}")
        if len(set(counts)) != len(counts):
            raise ValueError(f"counts must not repeat a value, got {tuple(counts)!r}")
        object.__setattr__(self, "counts", tuple(int(c) for c in counts))
        size = self.object_size
        if isinstance(size, bool) or not isinstance(size, numbers.Real) or not math.isfinite(
            size
        ) or size < MIN_OBJECT_SIZE_PX:
            raise ValueError(
                f"object_size must be a number >= {MIN_OBJECT_SIZE_PX} (pixels), got {size!r}"
            )
        object.__setattr__(self, "object_size", float(size))

        for colour in self.colours:
            for background in self.backgrounds:
                if _distance(PALETTE[colour], PALETTE[background]) < MIN_CONTRAST:
                    raise ValueError(
                        f"colours and backgrounds must not share a colour (object {colour!r} on "
                        f"background {background!r} would be invisible)"
                    )
        self._check_room()

    def _check_room(self) -> None:
        """Every direction, speed and count must keep the objects inside the frame."""
        travel = (self.frames - 1) * max(SPEEDS[s] for s in self.speeds)
        along = self.object_size + travel + 2 * EDGE_MARGIN_PX
        across = max(self.counts) * self.object_size + (max(self.counts) - 1) * OBJECT_GAP_PX
        across += 2 * EDGE_MARGIN_PX
        for direction in self.directions:
            dy, _ = DIRECTIONS[direction]
            along_dim, across_dim = (
                ("height", "width") if dy else ("width", "height")
            )
            if along > getattr(self, along_dim):
                raise ValueError(
                    f"object_size={self.object_size:g} with speed "
                    f"{max(SPEEDS[s] for s in self.speeds):g} px/frame over {self.frames} frames "
                    f"needs {along:g} px along {direction!r} motion, but {along_dim} is "
                    f"{getattr(self, along_dim)}: lower object_size, speeds or frames"
                )
            if across > getattr(self, across_dim):
                raise ValueError(
                    f"object_size={self.object_size:g} with counts up to {max(self.counts)} "
                    f"needs {across:g} px across {direction!r} motion, but {across_dim} is "
                    f"{getattr(self, across_dim)}: lower object_size or counts"
                )

    # -- derived values ------------------------------------------------------------------------

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        """``(3, frames, height, width)``."""
        return (3, self.frames, self.height, self.width)

    @property
    def num_captions(self) -> int:
        """Number of attribute combinations, ``len(all_captions(self))``."""
        return (
            len(self.shapes) * len(self.colours) * len(self.backgrounds)
            * len(self.directions) * len(self.counts) * len(self.speeds)
        )

    @property
    def min_contrast(self) -> float:
        """Smallest RGB distance between an object colour and a background of this config."""
        return min(
            _distance(PALETTE[c], PALETTE[b]) for c in self.colours for b in self.backgrounds
        )

    @property
    def colour_separation(self) -> float:
        """Smallest RGB distance between two colours this config can show (objects and
        backgrounds together); 2.0 for any choice from :data:`PALETTE`."""
        names = sorted(set(self.colours) | set(self.backgrounds))
        if len(names) < 2:
            return 2.0
        return min(_distance(PALETTE[a], PALETTE[b]) for a, b in itertools.combinations(names, 2))

    def speed_of(self, caption: Caption) -> float:
        """Pixels per frame of ``caption`` (its speed, or the task's only speed when None)."""
        return SPEEDS[caption.speed if caption.speed is not None else self.speeds[0]]

    def check_caption(self, caption: Caption) -> Caption:
        """Return ``caption`` if every attribute is one of this config's; else ValueError."""
        if not isinstance(caption, Caption):
            raise TypeError(f"caption must be a Caption, got {type(caption).__name__}")
        check_choice("caption.shape", caption.shape, self.shapes)
        check_choice("caption.colour", caption.colour, self.colours)
        check_choice("caption.background", caption.background, self.backgrounds)
        check_choice("caption.direction", caption.direction, self.directions)
        if caption.count not in self.counts:
            raise ValueError(f"caption.count must be one of {self.counts}, got {caption.count!r}")
        if len(self.speeds) == 1:
            if caption.speed not in (None, self.speeds[0]):
                raise ValueError(
                    f"caption.speed must be None or {self.speeds[0]!r} (the task's only speed), "
                    f"got {caption.speed!r}"
                )
        else:
            check_choice("caption.speed", caption.speed, self.speeds)
        return caption


def _distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return math.dist(a, b)


def iter_captions(config: SyntheticTaskConfig) -> Iterator[Caption]:
    """Every attribute combination of ``config``, in a fixed order."""
    speeds: tuple[str | None, ...] = config.speeds if len(config.speeds) > 1 else (None,)
    for shape, colour, background, direction, count, speed in itertools.product(
        config.shapes, config.colours, config.backgrounds, config.directions, config.counts,
        speeds,
    ):
        yield Caption(shape, colour, background, direction, count, speed)


def all_captions(config: SyntheticTaskConfig | None = None) -> list[Caption]:
    """Every attribute combination of ``config`` (default config: 96 captions)."""
    return list(iter_captions(config if config is not None else SyntheticTaskConfig()))

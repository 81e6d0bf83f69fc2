"""Why attention stays unreduced, as typed values: what kind of reason it is, and the fix.

Every layer that leaves a site or a graph alone (the analysis, the planner, the passes, the
backend) says why with a :class:`Reason`. It is a ``str`` (the text users read in reports and
warnings, and what the report's JSON holds), carrying two more facts the backend acts on
instead of searching the text:

- ``kind`` (:class:`ReasonKind`): whether the user asked for it (no warning), whether it is by
  design (small sites beside reduced ones), or whether it is worth a warning;
- ``fix``: what the user can change to get the attention reduced, or None.

Reports hold the text only (``str(reason)``): they are plain data, written as JSON and loaded
with ``torch.load(weights_only=True)`` when a spawned process sends one back.

This module depends on nothing else in the package.
"""

from __future__ import annotations

import enum


class ReasonKind(enum.Enum):
    """What an unreduced site or graph means for the user."""

    CHOSEN = "chosen"
    """The settings ask for it (all ratios 0 at the site, its block in ``skip_blocks``): no warning."""
    TOO_SMALL = "too small"
    """Fewer video tokens than ``min_video_tokens``: by design; warned about only when no site of
    the graph is reduced."""
    NEEDS_REGIONAL_HOOK = "needs the regional hook"
    """A transformer block compiled alone without the hook that tells it the grid: always warned
    about, whatever the other sites' reasons."""
    NO_VIDEO_TOKENS = "no video tokens"
    """The attention holds no video tokens (text-only attention, or a graph where no video grid was
    found): nothing to reduce; the analysis adds why no grid was found where that is the cause."""
    NOT_APPLICABLE = "not applicable"
    """The method does not apply to this attention by design (AsymRnR reduces the video tokens a
    softmax attention runs over): temporal attention over a handful of frames, attention along
    another axis than the grid's, other tokens attending to the video, linear attention. Warned
    about only when no site of the graph is reduced."""
    PROBLEM = "problem"
    """Anything else the user did not choose: warned about once, with the fix where there is one."""


#: Said when a graph stays unreduced for a reason that has no fix of its own.
GENERIC_FIX = "see backend.report().to_dict() for each site's reason"
#: The fix for symbolic shapes (the analysis needs static token counts).
DYNAMIC_FALSE_FIX = "compile with dynamic=False (or mark no dimension dynamic)"
#: The fix when a graph shows no video grid: let the compiled graph see where the tokens come from.
NO_GRID_FIX = ("compile the whole transformer (its patch embedding gives the grid), or, for blocks compiled alone, "
               "asymrnr_compile.compile_repeated_blocks / apply_token_layout_hook (an InputLayout declares the grid)")
#: The fix for attention written by hand: the backend reduces scaled_dot_product_attention calls.
USE_SDPA_FIX = "compute the attention with torch.nn.functional.scaled_dot_product_attention"


class Reason(str):
    """A reason text (``str``) with its :class:`ReasonKind` and fix.

    ``Reason("...", ReasonKind.PROBLEM, fix="compile with dynamic=False")``. Behaves as its text
    everywhere (formatting, JSON, equality with a ``str``); :func:`kind_of` and :func:`fix_of`
    read the extra facts from any string (a plain ``str`` is a :attr:`ReasonKind.PROBLEM` without
    a fix).
    """

    kind: ReasonKind
    fix: str | None

    def __new__(cls, text: str, kind: ReasonKind = ReasonKind.PROBLEM, fix: str | None = None) -> Reason:
        if not isinstance(kind, ReasonKind):
            raise TypeError(f"kind must be a ReasonKind, got {kind!r}")
        reason = super().__new__(cls, text)
        reason.kind = kind
        reason.fix = fix
        return reason

    def __reduce__(self):  # a str subclass with attributes: pickle it with its kind and fix
        return (Reason, (str(self), self.kind, self.fix))


def joined(reason: str | None, note: str) -> Reason:
    """``reason; note`` (or ``note`` alone when ``reason`` is None), keeping ``reason``'s kind and
    fix; a typed ``note`` (:class:`Reason`) gives both where ``reason`` is None."""
    if reason is None:
        return note if isinstance(note, Reason) else Reason(note)
    return Reason(f"{reason}; {note}", kind_of(reason), fix_of(reason) or fix_of(note))


def prefixed(prefix: str, reason: str) -> Reason:
    """``reason`` (a :class:`Reason` or a plain ``str``) with ``prefix`` before its text
    (``"blocks.0.attn: "``), keeping its kind and fix."""
    return Reason(prefix + str(reason), kind_of(reason), fix_of(reason))


def kind_of(reason: str) -> ReasonKind:
    """The kind of ``reason`` (a plain ``str``: :attr:`ReasonKind.PROBLEM`)."""
    return reason.kind if isinstance(reason, Reason) else ReasonKind.PROBLEM


def fix_of(reason: str) -> str | None:
    """The fix of ``reason``, or None (also for a plain ``str``)."""
    return reason.fix if isinstance(reason, Reason) else None

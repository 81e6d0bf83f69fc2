"""Reasons for unreduced attention are typed values: a str with a kind and a fix."""

from __future__ import annotations

import json
import pickle

import pytest

from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.plan.select_sites import NO_FEATURE_AT_THESE_RATIOS
from asymrnr_compile.reasons import Reason, ReasonKind, fix_of, joined, kind_of
from asymrnr_compile.reasons import prefixed as with_prefix


def test_a_reason_is_its_text_and_carries_its_kind_and_fix():
    reason = Reason("32 video tokens < min_video_tokens=1024", ReasonKind.TOO_SMALL, fix="lower min_video_tokens")
    assert reason == "32 video tokens < min_video_tokens=1024" and f"{reason}" == str(reason)
    assert json.dumps({"reason": reason}) == json.dumps({"reason": str(reason)})
    assert (kind_of(reason), fix_of(reason)) == (ReasonKind.TOO_SMALL, "lower min_video_tokens")
    restored = pickle.loads(pickle.dumps(reason))  # spawned ranks send reports back pickled
    assert (restored, restored.kind, restored.fix) == (reason, reason.kind, reason.fix)
    prefixed = with_prefix("blocks.0.attn: ", reason)
    assert prefixed == "blocks.0.attn: " + reason and (prefixed.kind, prefixed.fix) == (reason.kind, reason.fix)


def test_a_plain_string_is_a_problem_without_a_fix():
    assert (kind_of("something else"), fix_of("something else")) == (ReasonKind.PROBLEM, None)


def test_a_bad_kind_is_refused():
    with pytest.raises(TypeError, match="kind must be a ReasonKind"):
        Reason("text", "chosen")


def test_the_planners_reasons_say_whether_the_user_chose_them():
    from asymrnr_compile.plan.select_sites import site_skip_reason

    class Site:  # the fields site_skip_reason reads
        reducible, reason, video_tokens, block_index, block = True, None, 32, 0, "blocks.0"
        grid, query_tokens = (2, 4, 4), 32

    small = site_skip_reason(Site(), AsymRnRConfig())
    assert kind_of(small) is ReasonKind.TOO_SMALL and "min_video_tokens" in fix_of(small)
    skipped = site_skip_reason(Site(), AsymRnRConfig(min_video_tokens=16, skip_blocks=(0,)))
    assert kind_of(skipped) is ReasonKind.CHOSEN and "skip_blocks" in fix_of(skipped)
    assert kind_of(NO_FEATURE_AT_THESE_RATIOS) is ReasonKind.CHOSEN


def test_reports_hold_plain_strings():
    """A report crosses processes (torch.save / torch.load(weights_only=True)) and becomes JSON:
    its reasons are plain ``str``, not :class:`Reason`."""
    import io

    import torch
    import torch._dynamo

    from asymrnr_compile import AsymRnRBackend
    from asymrnr_lab.models import build_reference_model, reference_inputs

    model, inputs = build_reference_model("tiny"), reference_inputs("tiny")
    torch._dynamo.reset()
    backend = AsymRnRBackend(AsymRnRConfig(skip_blocks=(0,), min_video_tokens=16))
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad():
        compiled(**inputs)
    report = backend.report().to_dict()
    reasons = [site["reason"] for graph in report["graphs"] for site in graph["sites"] if site.get("reason")]
    assert reasons and all(type(reason) is str for reason in reasons)
    buffer = io.BytesIO()
    torch.save(report, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == report
    torch._dynamo.reset()


def test_joined_keeps_the_first_reasons_kind_and_takes_a_fix_where_it_has_none():
    first = Reason("text-only attention", ReasonKind.NO_VIDEO_TOKENS)
    note = Reason("h unavailable: rope", fix="match on the features")
    both = joined(first, note)
    assert both == "text-only attention; h unavailable: rope"
    assert (kind_of(both), fix_of(both)) == (ReasonKind.NO_VIDEO_TOKENS, "match on the features")
    assert joined(None, note) is note
    alone = joined(None, "a plain note")
    assert (alone, kind_of(alone), fix_of(alone)) == ("a plain note", ReasonKind.PROBLEM, None)

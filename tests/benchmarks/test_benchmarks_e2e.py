"""The machinery of benchmarks/e2e.py and benchmarks/write_results.py, on quick shapes."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from helpers import load_benchmark

_load = load_benchmark


e2e = _load("e2e")
write_results = _load("write_results")

QUICK_VARIANTS = ("eager", "inductor", "asymrnr_q0.5_kv0.3", "random_q0.5_kv0.3")


@pytest.fixture(scope="module")
def quick_document(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "e2e.json"
    e2e.main(["--model", "reference", "--quick", "--json", str(out), "--variants", ",".join(QUICK_VARIANTS)])
    return json.loads(out.read_text())


def test_quick_reference_run_writes_every_field_and_the_rewrite_fires(quick_document):
    document = quick_document
    assert {"results", "models", "machine", "command", "date"} <= set(document)
    assert document["command"].startswith("python benchmarks/e2e.py --model reference --quick")
    rows = {row["variant"]: row for row in document["results"]}
    assert list(rows) == list(QUICK_VARIANTS)
    for name in QUICK_VARIANTS:
        row = rows[name]
        assert row["model"] == "reference"
        for key in ("loop_seconds", "median_step_seconds", "loop_speedup_vs_inductor",
                    "median_step_speedup_vs_inductor", "loop_speedup_vs_eager", "ideal_speedup", "loop_efficiency",
                    "rel_l2", "psnr_db", "compile_seconds", "compiled_variants", "dynamo_recompiles", "peak_rss_mb"):
            assert row[key] is not None, (name, key)
            assert math.isfinite(row[key]) or (key == "psnr_db" and name == "inductor"), (name, key)
        assert row["dynamo_recompiles"] == 0
    assert rows["inductor"]["loop_speedup_vs_inductor"] == 1.0 and rows["inductor"]["rel_l2"] == 0.0
    assert rows["inductor"]["matching_steps"] == [] and rows["inductor"]["matching_step_cost"] is None
    for name in ("asymrnr_q0.5_kv0.3", "random_q0.5_kv0.3"):
        row = rows[name]
        assert row["rewrite_fired"] and row["sites_reduced"] == row["sites_total"] == 2
        assert row["compiled_variants"] == 2 and row["cache_misses"] > 0 and row["cache_hits"] > 0
        assert row["ideal_speedup"] > 1.0 and row["rel_l2"] > 1e-4  # reduced, so not the unreduced result
        # --quick: 3 steps, cache window 2: steps 0 and 2 compute matchings, step 1 reuses them
        assert row["matching_steps"] == [0, 2] and row["matching_step_cost"] > 0
    assert rows["random_q0.5_kv0.3"]["config"]["token_selection"] == "random"
    assert rows["random_q0.5_kv0.3"]["rel_l2"] != rows["asymrnr_q0.5_kv0.3"]["rel_l2"]


def test_write_results_replaces_only_its_section(quick_document, tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other section\n\nkeep me\n")
    path = tmp_path / "e2e.json"
    path.write_text(json.dumps(quick_document))
    write_results.main([str(path), "--results", str(results)])
    first = results.read_text()
    assert first.startswith("# Benchmark results\n\n## Other section\n\nkeep me\n")
    assert first.count(write_results.BEGIN) == first.count(write_results.END) == 1
    assert quick_document["command"] in first and quick_document["machine"] in first
    assert "| asymrnr_q0.5_kv0.3 |" in first and "| random_q0.5_kv0.3 |" in first
    # regenerating replaces the section instead of appending another; text after it stays
    results.write_text(first + "\n## Later section\n")
    quick_document["date"] = "2099-01-01 00:00 UTC"
    path.write_text(json.dumps(quick_document))
    write_results.main([str(path), "--results", str(results)])
    second = results.read_text()
    assert second.count(write_results.BEGIN) == 1 and "2099-01-01" in second and "## Later section" in second
    assert "keep me" in second


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        e2e.main(["--model", "sora"])
    with pytest.raises(SystemExit):
        e2e.main(["--variants", "eager,turbo"])
    with pytest.raises(ValueError, match="dtype must be one of"):
        e2e.run(["reference"], dtype="int8")
    with pytest.raises(ValueError, match="model must be one of"):
        e2e.build_workload("sora")
    with pytest.raises(ValueError, match="preset applies to the reference model only"):
        e2e.build_workload("cogvideox", preset="small")
    with pytest.raises(SystemExit):
        e2e.main(["--preset", "enormous"])


def test_profile_matching_step_finds_the_matcher_only_in_matching_steps():
    """--quick: 3 steps, cache window 2, so steps 0 and 2 match and step 1 reuses: the matcher's
    op has time in matching steps only, and the table prints it."""
    out = e2e.run_model("reference", quick=True, variants=("inductor", "asymrnr_q0.5_kv0.3"), log=lambda line: None,
                        profile_repeats=1)
    rows = {row["variant"]: row for row in out["rows"]}
    baseline = rows["inductor"]["matching_step_profile"]  # plain Inductor: every step is "other"
    assert baseline["matching_steps_profiled"] == 0 and baseline["other_steps_profiled"] == 3
    assert e2e.MATCH_OP_KEY not in {op["op"] for op in baseline["ops"]}
    largest = max(baseline["ops"], key=lambda op: op["other_step_ms"])["op"]
    assert e2e.profile_table("inductor", baseline).splitlines()[2].startswith(largest[:47])
    profile = rows["asymrnr_q0.5_kv0.3"]["matching_step_profile"]
    assert profile["matching_steps_profiled"] == 2 and profile["other_steps_profiled"] == 1
    assert profile["matcher_inclusive_ms"] > 0
    ops = {op["op"]: op for op in profile["ops"]}
    matcher = ops[e2e.MATCH_OP_KEY]
    assert matcher["matching_step_ms"] > 0 and matcher["other_step_ms"] == 0
    extras = [op["matching_step_ms"] - op["other_step_ms"] for op in profile["ops"]]
    assert extras == sorted(extras, reverse=True)
    assert profile["matching_step_self_ms"] > 0 and profile["other_step_self_ms"] > 0
    assert e2e.MATCH_OP_KEY in e2e.profile_table("asymrnr_q0.5_kv0.3", profile)
    with pytest.raises(SystemExit):
        e2e.main(["--profile-matching-step", "-1"])


def test_preset_sizes_the_reference_workload():
    workload = e2e.build_workload("reference", preset="small", steps=2)
    assert workload.info["video_tokens"] == 576 and "'small'" in workload.description


def test_batch_sets_the_prompts_per_call_of_the_reference_workload():
    workload = e2e.build_workload("reference", quick=True, steps=2, batch=3)
    assert workload.noise.shape[0] == 3 and workload.text.shape[0] == 3 and workload.null_text.shape[0] == 3
    assert workload.info["prompts_per_batch"] == 3
    with pytest.raises(ValueError, match="batch must be >= 1"):
        e2e.build_workload("reference", quick=True, batch=0)
    with pytest.raises(ValueError, match="reference model only"):
        e2e.build_workload("wan", quick=True, batch=2)
    with pytest.raises(SystemExit):
        e2e.main(["--batch", "0"])


@pytest.mark.slow
@pytest.mark.parametrize("name", e2e.FAMILIES)
def test_quick_diffusers_family_runs_reduced_without_recompiles(name):
    pytest.importorskip("diffusers")
    out = e2e.run_model(name, quick=True, variants=("inductor", "asymrnr_q0.5_kv0.3"), log=lambda line: None)
    rows = {row["variant"]: row for row in out["rows"]}
    row = rows["asymrnr_q0.5_kv0.3"]
    assert row["rewrite_fired"] and row["dynamo_recompiles"] == 0 and row["dynamo_graphs"] == 1
    assert math.isfinite(row["rel_l2"]) and row["rel_l2"] > 0


def test_defaults_studies_change_one_setting_and_run_only_when_named():
    """The ``asymrnr_default_*`` studies are the defaults with one setting changed, keep their own
    matching window (not ``--cache-steps``), and are not part of a run without ``--variants``."""
    workload = e2e.build_workload("reference", quick=True, steps=2)
    names = ("asymrnr_default", *e2e.DEFAULT_CHANGED_VARIANTS)
    configs = {v.name: v.backend.config for v in e2e.make_variants(workload, 5, names)}
    default = configs["asymrnr_default"]
    assert default.cache_steps != 5 and default.match_dims is not None
    assert configs["asymrnr_default_cache1"].cache_steps == 1
    assert configs["asymrnr_default_exact_matching"].match_dims is None
    assert configs["asymrnr_default_match_dims64"].match_dims == 64
    for name, changed in e2e.DEFAULT_CHANGED_VARIANTS.items():
        differing = {f.name for f in dataclasses.fields(default)
                     if getattr(configs[name], f.name) != getattr(default, f.name)}
        assert differing == set(changed), name
    assert not set(e2e.DEFAULT_CHANGED_VARIANTS) & set(e2e.DEFAULT_RUN_VARIANTS)
    assert set(e2e.DEFAULT_RUN_VARIANTS) < set(e2e.VARIANTS)

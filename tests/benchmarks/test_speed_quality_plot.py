"""benchmarks/speed_quality_table.py's plot: the speed/quality frontier, merging the JSON of
several runs, and ``--plot-from`` drawing a PNG without sampling."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import speed_quality_table  # noqa: E402
from speed_quality_table import dominates, frontier, merge_results, model_slug  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: "all right" of the hand-made results' unaccelerated row.
REFERENCE_ALL_RIGHT = 100.0
#: Most rows a generated table has (the real tables have up to 19).
MAX_ROWS = 12


def _row(name: str, change: float | None, speedup: float | None) -> dict:
    """A measured row as ``--json`` writes it (the fields the plot reads, and a few others)."""
    all_correct = None if change is None else REFERENCE_ALL_RIGHT + change
    return {"row": name, "all_correct": all_correct, "change": change, "valid": 100.0, "psnr": None, "ssim": None,
            "flop_ideal": 1.0, "loop_speedup": speedup, "loop_seconds": 1.0, "round_seconds": [1.0],
            "graphs": 1, "recompiles_during_timing": 0}


def _not_applicable(name: str) -> dict:
    return {"row": name, "applicable": False, "reason": "cannot attach to this model"}


def _result(rows: list[dict], **fields) -> dict:
    """A result of the shape ``--json`` writes (1024-token reference model)."""
    return {
        "checkpoint": "synthetic_dit_fine.safetensors", "checkpoint_step": 6400, "training_steps": 6400,
        "preset": "synthetic-fine", "video_tokens": 1024, "q_ratio": 0.5, "kv_ratio": 0.3, "samples": 96,
        "captions_per_seed": 96, "seeds": [0], "timing_captions": 16, "rounds": 3,
        "machine": "AMD EPYC, 2 CPU cores, torch 2.13.0+cpu, 2 threads, Linux",
        "load_average": {"before": [0.2, 0.6, 0.5], "after": [2.0, 2.0, 1.8]},
        "command": "python benchmarks/speed_quality_table.py --checkpoint m.safetensors --json t.json",
        "date": "2026-12-07", "seconds": 100.0, "rows": rows, **fields,
    }


def _names(rows) -> list[str]:
    return [row["row"] for row in rows]


def test_frontier_drops_dominated_rows_and_sorts_by_quality_loss():
    rows = [_row("unaccelerated", 0.0, 1.0), _row("fast, broken", -40.0, 1.9), _row("lossless", 0.0, 1.5),
            _row("dominated", -1.0, 1.4), _row("small loss", -2.0, 1.8), _row("worse and slower", -3.0, 1.7)]
    assert _names(frontier(rows)) == ["lossless", "small loss", "fast, broken"]


def test_frontier_keeps_ties_and_drops_rows_equal_on_one_axis_and_worse_on_the_other():
    rows = [_row("a", -1.0, 1.5), _row("b", -1.0, 1.5), _row("same speed, more loss", -2.0, 1.5),
            _row("same loss, slower", -1.0, 1.4), _row("gain", 1.0, 1.2)]
    assert _names(frontier(rows)) == ["gain", "a", "b"]


def test_frontier_leaves_out_rows_without_a_measured_speedup_or_not_applicable():
    rows = [_row("measured", -1.0, 1.2), _row("no speedup", 0.0, None), _not_applicable("hook"),
            {**_row("marked not applicable", 0.0, 3.0), "applicable": False}]
    assert _names(frontier(rows)) == ["measured"]
    assert frontier([_not_applicable("hook")]) == []


#: Small grids of changes and speedups, so that generated tables have ties.
CHANGES = st.integers(-20, 4).map(lambda half_points: half_points / 2)
SPEEDUPS = st.integers(5, 30).map(lambda tenths: tenths / 10)
MEASURED = st.builds(lambda change, speedup: _row("measured", change, speedup), CHANGES, SPEEDUPS)
UNMEASURED = st.one_of(st.just(_not_applicable("hook")),
                       CHANGES.map(lambda change: _row("no speedup", change, None)))


@given(st.lists(st.one_of(MEASURED, MEASURED, UNMEASURED), max_size=MAX_ROWS))
def test_frontier_is_the_set_of_undominated_rows(rows):
    rows = [{**row, "row": f"{row['row']} {index}"} for index, row in enumerate(rows)]
    measured = [row for row in rows if speed_quality_table.plotted(row)]
    best = frontier(rows)
    on_frontier = {row["row"] for row in best}
    assert on_frontier <= {row["row"] for row in measured}
    for row in best:
        assert not any(dominates(other, row) for other in measured)
    for row in measured:
        if row["row"] not in on_frontier:
            assert any(dominates(front, row) for front in best)
    losses = [speed_quality_table.quality_loss(row) for row in best]
    assert losses == sorted(losses)


def test_merge_keeps_the_first_rows_and_recomputes_changes_against_the_first_unaccelerated_row():
    first = _result([_row("unaccelerated", 0.0, 1.0), _row("asymrnr, defaults", -1.0, 1.4),
                     _not_applicable("cache-dit DBCache (threshold 0.12)")])
    second = _result([{**_row("unaccelerated", 0.0, 1.0), "all_correct": 99.0},
                      _row("asymrnr, defaults", -1.0, 1.2), _row("cache-dit DBCache (threshold 0.12)", 0.0, 1.5)],
                     rounds=2)
    merged = merge_results([first, second])
    rows = {row["row"]: row for row in merged["rows"]}
    assert list(rows) == ["unaccelerated", "asymrnr, defaults", "cache-dit DBCache (threshold 0.12)"]
    assert rows["asymrnr, defaults"]["loop_speedup"] == 1.4
    # a not-applicable entry gives way to a measured one; its change is against the first file's row
    assert rows["cache-dit DBCache (threshold 0.12)"]["loop_speedup"] == 1.5
    assert rows["cache-dit DBCache (threshold 0.12)"]["change"] == 0.0
    assert rows["unaccelerated"]["all_correct"] == REFERENCE_ALL_RIGHT
    assert merged["merged_from"] == 2 and merged["rounds"] == 3


def test_merge_refuses_runs_on_another_model():
    with pytest.raises(ValueError, match="video_tokens"):
        merge_results([_result([_row("unaccelerated", 0.0, 1.0)]),
                       _result([_row("unaccelerated", 0.0, 1.0)], video_tokens=256)])


def test_merge_refuses_runs_at_another_step_count_and_reads_old_files_as_the_benchmarks():
    with pytest.raises(ValueError, match="sampling_steps"):
        merge_results([_result([_row("unaccelerated", 0.0, 1.0)]),
                       _result([_row("unaccelerated", 0.0, 1.0)], sampling_steps=50)])
    merged = merge_results([_result([_row("unaccelerated", 0.0, 1.0)]),
                            _result([_row("asymrnr, defaults", -1.0, 1.4)], sampling_steps=20)])
    assert merged["merged_from"] == 2


def test_model_slug_names_architecture_and_video_tokens():
    assert model_slug(_result([])) == "reference_1024"
    assert model_slug(_result([], preset="synthetic", video_tokens=256)) == "reference_256"
    assert model_slug(_result([], preset="cogvideox", video_tokens=256)) == "cogvideox_256"
    assert model_slug(_result([], preset=None, checkpoint="runs/My Model")) == "my_model_1024"


def test_plot_from_json_writes_a_png(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    rows = [_row("unaccelerated", 0.0, 1.0), _row("asymrnr, defaults", -1.0, 1.4),
            _row("asymrnr, published (cache 5)", -37.5, 1.36), _row("cache-dit DBCache (threshold 0.12)", 0.0, 1.5),
            _row("asymrnr defaults + cache-dit DBCache (threshold 0.12)", -2.1, 1.87),
            _row("TaylorSeer (interval 2)", 1.0, 1.8), _not_applicable("first-block cache (threshold 0.05)")]
    table = tmp_path / "table.json"
    table.write_text(json.dumps(_result(rows)))
    png = tmp_path / "plot" / "frontier.png"
    assert speed_quality_table.main(["--plot-from", str(table), "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(PNG_MAGIC)
    # without --plot: benchmarks/figures/speed_quality_<model slug>.png
    monkeypatch.setattr(speed_quality_table, "FIGURES", tmp_path)
    assert speed_quality_table.main(["--plot-from", str(table), str(table)]) == 0
    assert (tmp_path / "speed_quality_reference_1024.png").read_bytes().startswith(PNG_MAGIC)
    assert "speed_quality_reference_1024.png" in capsys.readouterr().out


def test_without_checkpoint_or_plot_from_it_is_a_parser_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        speed_quality_table.main([])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--checkpoint" in error and "--plot-from" in error


@pytest.mark.parametrize("extra", [["--results"], ["--json", "out.json"]])
def test_plot_from_with_run_options_is_a_parser_error(tmp_path, capsys, extra):
    table = tmp_path / "table.json"
    table.write_text(json.dumps(_result([_row("unaccelerated", 0.0, 1.0)])))
    with pytest.raises(SystemExit) as exit_info:
        speed_quality_table.main(["--plot-from", str(table), *extra])
    assert exit_info.value.code == 2
    assert "only draws the plot" in capsys.readouterr().err


def test_plot_from_files_of_different_runs_is_a_parser_error(tmp_path, capsys):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(_result([_row("unaccelerated", 0.0, 1.0)])))
    second.write_text(json.dumps(_result([_row("unaccelerated", 0.0, 1.0)], samples=384, seeds=[0, 1, 2, 3])))
    with pytest.raises(SystemExit):
        speed_quality_table.main(["--plot-from", str(first), str(second)])
    assert "differ in samples, seeds" in capsys.readouterr().err

"""Schedule: the threshold rule on the released AsymRnR schedules, save/load, resampling,
the conflict rule and argument checks."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from asymrnr_compile.plan.schedule import FEATURES, FORMAT_VERSION, Schedule

# The released schedules, shipped with the tests (tests/data/official_schedules/README.md).
PUBLISHED_SCHEDULES = Path(__file__).resolve().parents[1] / "data" / "official_schedules"

# (tiers file, table files) of the release: every model with tables, both presets.
# cogvideox-5b ships tiers but no table in the release, so it has no pair here.
PUBLISHED_PAIRS = [
    ("euclidean_cogvideox-2b_cache5.safetensors", "cogvideox-2b_cache5_0.yaml"),
    ("euclidean_cogvideox-2b_cache5.safetensors", "cogvideox-2b_cache5_1.yaml"),
    ("euclidean_fast-hyvideo_cache1.safetensors", "fast-hyvideo_cache1_0.yaml"),
    ("euclidean_fast-hyvideo_cache1.safetensors", "fast-hyvideo_cache1_1.yaml"),
    ("euclidean_hyvideo_cache3.safetensors", "hyvideo_cache3_0.yaml"),
    ("euclidean_hyvideo_cache3.safetensors", "hyvideo_cache3_1.yaml"),
    ("euclidean_mochi_cache3.safetensors", "mochi_cache3_0.yaml"),
    ("euclidean_mochi_cache3.safetensors", "mochi_cache3_1.yaml"),
]
PUBLISHED_SHAPES = {
    "euclidean_cogvideox-2b_cache5.safetensors": (30, 50),
    "euclidean_cogvideox-5b_cache5.safetensors": (42, 50),
    "euclidean_fast-hyvideo_cache1.safetensors": (60, 6),
    "euclidean_hyvideo_cache3.safetensors": (60, 30),
    "euclidean_mochi_cache3.safetensors": (48, 30),
}


def expected_ratios(tiers_path: Path, table_path: Path) -> dict[str, list[list[float]]]:
    """The threshold rule, written out independently of the package: for every (block, step),
    the largest ratio of the YAML table whose threshold the tier reaches, else 0.
    Table ``q`` reads tier tensor ``q``; table ``v`` reads tier tensor ``v`` and is our ``kv``."""
    table = yaml.safe_load(table_path.read_text())
    with safe_open(str(tiers_path), framework="pt") as handle:
        tiers = {key: handle.get_tensor(key).tolist() for key in handle.keys()}
    out = {}
    for table_feature, ours in (("q", "q"), ("v", "kv")):
        rows = []
        for tier_row in tiers[table_feature]:
            row = []
            for tier in tier_row:
                best = 0.0
                for threshold, ratio in table.get(table_feature, {}).items():
                    if tier >= int(threshold) and ratio > best:
                        best = ratio
                row.append(best)
            rows.append(row)
        out[ours] = rows
    return out


def assert_matches_threshold_rule(folder: Path, tiers_name: str, table_name: str) -> Schedule:
    schedule = Schedule.from_published(folder / tiers_name, folder / table_name)
    assert (schedule.num_blocks, schedule.num_steps) == PUBLISHED_SHAPES[tiers_name]
    expected = expected_ratios(folder / tiers_name, folder / table_name)
    for feature, rows in expected.items():
        for block, row in enumerate(rows):
            for step, value in enumerate(row):
                got = schedule.ratio(block=block, step=step, feature=feature)
                assert got == value, (feature, block, step, got, value)
    # The released tables have no h table: h is off everywhere.
    assert not schedule.ratios("h").any()
    return schedule


# ---------------------------------------------------------------------- published import


@pytest.mark.parametrize(("tiers_name", "table_name"), PUBLISHED_PAIRS)
def test_published_import_matches_threshold_rule_everywhere(tiers_name, table_name):
    schedule = assert_matches_threshold_rule(PUBLISHED_SCHEDULES, tiers_name, table_name)
    assert schedule.source == f"{tiers_name} + {table_name}"


def test_release_has_the_files_the_tests_cover():
    tiers = sorted(p.name for p in PUBLISHED_SCHEDULES.glob("*.safetensors"))
    tables = sorted(p.name for p in PUBLISHED_SCHEDULES.glob("*.yaml"))
    assert tiers == sorted(PUBLISHED_SHAPES)
    assert tables == sorted(t for _, t in PUBLISHED_PAIRS)


def test_tierless_table_model_tiers_load_with_another_table():
    # cogvideox-5b has no released table; its tiers still import with a cache5 table.
    schedule = assert_matches_threshold_rule(
        PUBLISHED_SCHEDULES, "euclidean_cogvideox-5b_cache5.safetensors", "cogvideox-2b_cache5_0.yaml"
    )
    assert (schedule.num_blocks, schedule.num_steps) == (42, 50)


def _first(mask: torch.Tensor) -> tuple[int, int]:
    block, step = (int(i) for i in mask.nonzero()[0])
    return block, step


def test_cogvideox_2b_known_values_by_hand():
    tiers_path = PUBLISHED_SCHEDULES / "euclidean_cogvideox-2b_cache5.safetensors"
    with safe_open(str(tiers_path), framework="pt") as handle:
        q_tiers, v_tiers = handle.get_tensor("q"), handle.get_tensor("v")
    base = Schedule.from_published(tiers_path, PUBLISHED_SCHEDULES / "cogvideox-2b_cache5_0.yaml")
    fast = Schedule.from_published(tiers_path, PUBLISHED_SCHEDULES / "cogvideox-2b_cache5_1.yaml")
    assert dict(base.tables["q"]) == {6: 0.4, 7: 0.8} and dict(base.tables["kv"]) == {8: 0.3}
    assert dict(fast.tables["q"]) == {6: 0.6, 7: 0.8} and dict(fast.tables["kv"]) == {7: 0.3, 9: 0.4}
    # base, q {6: 0.4, 7: 0.8}; fast, q {6: 0.6, 7: 0.8}
    for tier, want_base, want_fast in [(5, 0.0, 0.0), (6, 0.4, 0.6), (7, 0.8, 0.8), (9, 0.8, 0.8)]:
        b, s = _first(q_tiers == tier)
        assert base.ratio(block=b, step=s, feature="q") == want_base
        assert fast.ratio(block=b, step=s, feature="q") == want_fast
    # base, kv {8: 0.3}; fast, kv {7: 0.3, 9: 0.4}
    for tier, want_base, want_fast in [(6, 0.0, 0.0), (7, 0.0, 0.3), (8, 0.3, 0.3), (9, 0.3, 0.4)]:
        b, s = _first(v_tiers == tier)
        assert base.ratio(block=b, step=s, feature="kv") == want_base
        assert fast.ratio(block=b, step=s, feature="kv") == want_fast


def test_fast_hyvideo_known_values_by_hand():
    tiers_path = PUBLISHED_SCHEDULES / "euclidean_fast-hyvideo_cache1.safetensors"
    with safe_open(str(tiers_path), framework="pt") as handle:
        q_tiers, v_tiers, k_tiers = handle.get_tensor("q"), handle.get_tensor("v"), handle.get_tensor("k")
    base = Schedule.from_published(tiers_path, PUBLISHED_SCHEDULES / "fast-hyvideo_cache1_0.yaml")
    fast = Schedule.from_published(tiers_path, PUBLISHED_SCHEDULES / "fast-hyvideo_cache1_1.yaml")
    b, s = _first(q_tiers == 7)
    assert base.ratio(block=b, step=s, feature="q") == 0.9
    b, s = _first(q_tiers == 6)
    assert base.ratio(block=b, step=s, feature="q") == 0.0
    b, s = _first(v_tiers == 8)
    assert base.ratio(block=b, step=s, feature="kv") == 0.3
    assert fast.ratio(block=b, step=s, feature="kv") == 0.4
    # kv reads the v tiers, not the k tiers: a cell where they disagree about threshold 8.
    b, s = _first((v_tiers >= 8) & (k_tiers < 8))
    assert base.ratio(block=b, step=s, feature="kv") == 0.3


def test_tables_keyed_by_strings_give_the_same_ratios():
    tiers = {"q": torch.tensor([[0, 5, 6, 7, 9]]), "v": torch.tensor([[8, 7, 9, 0, 8]])}
    by_int = Schedule.from_tables(tiers, {"q": {6: 0.4, 7: 0.8}, "v": {8: 0.3}})
    by_str = Schedule.from_tables(tiers, {"q": {"6": 0.4, "7": 0.8}, "kv": {"8": 0.3}})
    for feature in FEATURES:
        assert torch.equal(by_int.ratios(feature), by_str.ratios(feature))
    assert by_int.ratios("q").tolist() == [[0.0, 0.0, 0.4, 0.8, 0.8]]
    assert by_int.ratios("kv").tolist() == [[0.3, 0.0, 0.3, 0.0, 0.3]]
    assert by_int.tables == by_str.tables


def test_threshold_rule_takes_the_largest_ratio_reached_not_the_last_threshold():
    # A non-monotone table: tier 9 reaches thresholds 3 (0.5) and 8 (0.2) -> 0.5.
    schedule = Schedule.from_tables({"q": torch.tensor([[2, 3, 9]])}, {"q": {8: 0.2, 3: 0.5}})
    assert schedule.ratios("q").tolist() == [[0.0, 0.5, 0.5]]


# ---------------------------------------------------------------------- save / load


def _read_header(path: Path) -> dict:
    """Parse the safetensors layout by hand: an 8-byte little-endian header length, a JSON header,
    then the raw tensor bytes, which must end exactly where the last tensor's offsets say."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    assert 8 + size + max(ends) == len(raw)
    return header


def test_save_load_round_trip_is_exact(tmp_path):
    tiers = {"q": torch.randint(0, 10, (5, 7)), "v": torch.randint(0, 10, (5, 7))}
    schedule = Schedule.from_tables(
        tiers, {"q": {6: 0.4, 7: 0.8}, "v": {8: 0.3}}, grid=(13, 30, 45), model="toy", source="unit test"
    )
    path = tmp_path / "schedule.safetensors"
    schedule.save(path)
    loaded = Schedule.load(path)
    for feature in FEATURES:
        assert torch.equal(loaded.ratios(feature), schedule.ratios(feature))
        assert loaded.ratios(feature).dtype == torch.float64
    assert (loaded.num_blocks, loaded.num_steps) == (5, 7)
    assert loaded.grid == (13, 30, 45) and loaded.model == "toy" and loaded.source == "unit test"
    assert loaded.tables == schedule.tables
    assert loaded.to_dict() == schedule.to_dict()
    # Saving the loaded schedule again writes the same header and tensor bytes (safetensors may
    # order the metadata keys differently from one save to the next, so compare parsed headers).
    again = tmp_path / "again.safetensors"
    loaded.save(again)
    assert _read_header(again) == _read_header(path)
    assert again.read_bytes()[-5 * 7 * 8 * 3 :] == path.read_bytes()[-5 * 7 * 8 * 3 :]


def test_saved_file_is_plain_safetensors_without_pickle(tmp_path):
    path = tmp_path / "schedule.safetensors"
    Schedule.constant(3, 4, q=0.5).save(path)
    header = _read_header(path)  # 8-byte little-endian length + JSON header: the safetensors layout
    metadata = header.pop("__metadata__")
    assert metadata["format"] == "asymrnr_compile.plan.schedule"
    assert metadata["format_version"] == str(FORMAT_VERSION)
    info = json.loads(metadata["schedule"])
    assert (info["num_blocks"], info["num_steps"], info["grid"], info["tables"]) == (3, 4, None, None)
    assert {name: (v["dtype"], v["shape"]) for name, v in header.items()} == {
        f: ("F64", [3, 4]) for f in FEATURES
    }
    assert not path.read_bytes().startswith(b"PK")  # torch.save writes a zip of pickles
    with safe_open(str(path), framework="pt") as handle:
        assert sorted(handle.keys()) == sorted(FEATURES)


def test_load_rejects_other_files(tmp_path):
    tiers_file = PUBLISHED_SCHEDULES / "euclidean_fast-hyvideo_cache1.safetensors"
    with pytest.raises(ValueError, match=r"not a saved Schedule.*from_published"):
        Schedule.load(tiers_file)
    with pytest.raises(FileNotFoundError, match=r"path: no such file"):
        Schedule.load(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"not a readable safetensors file"):
        Schedule.load(garbage)
    newer = tmp_path / "newer.safetensors"
    info = json.dumps({"num_blocks": 2, "num_steps": 2})
    metadata = {"format": "asymrnr_compile.plan.schedule", "format_version": str(FORMAT_VERSION + 1), "schedule": info}
    save_file({f: torch.zeros(2, 2, dtype=torch.float64) for f in FEATURES}, str(newer), metadata=metadata)
    with pytest.raises(ValueError, match=r"format version 2.*reads up to 1"):
        Schedule.load(newer)


# ---------------------------------------------------------------------- steps


def _schedule_50_steps() -> Schedule:
    generator = torch.Generator().manual_seed(0)
    tiers = {"q": torch.randint(0, 10, (4, 50), generator=generator)}
    return Schedule.from_tables(tiers, {"q": {3: 0.2, 6: 0.4, 8: 0.7}})


def test_resample_50_to_30_keeps_ends_and_is_monotone():
    schedule = _schedule_50_steps()
    mapping = schedule.source_steps(30)
    assert len(mapping) == 30 and mapping[0] == 0 and mapping[-1] == 49
    assert all(a <= b for a, b in zip(mapping, mapping[1:]))
    assert len(set(mapping)) == 30  # downsampling never reads one step twice
    # nearest step: |j * 49 / 29 - mapping[j]| <= 1/2
    assert all(abs(j * 49 / 29 - s) <= 0.5 for j, s in enumerate(mapping))
    short = schedule.resample(30)
    assert (short.num_blocks, short.num_steps) == (4, 30)
    assert torch.equal(short.ratios("q"), schedule.ratios("q")[:, list(mapping)])
    assert short.tables == schedule.tables and "resampled 50 -> 30 steps" in short.source
    for j in range(30):
        for block in range(4):
            by_progress = schedule.ratio(block=block, progress=j / 29, feature="q")
            assert by_progress == short.ratio(block=block, step=j, feature="q")


def test_resample_up_same_and_single_step():
    schedule = _schedule_50_steps()
    assert schedule.resample(50) is schedule
    assert schedule.source_steps(50) == tuple(range(50))
    up = schedule.source_steps(100)
    assert up[0] == 0 and up[-1] == 49 and all(a <= b for a, b in zip(up, up[1:]))
    assert set(up) == set(range(50))
    assert schedule.source_steps(1) == (0,)
    assert Schedule.constant(2, 1, q=0.3).source_steps(7) == (0,) * 7


def test_progress_addressing():
    schedule = _schedule_50_steps()
    q = schedule.ratios("q")
    assert schedule.ratio(block=1, progress=0.0, feature="q") == float(q[1, 0])
    assert schedule.ratio(block=1, progress=1.0, feature="q") == float(q[1, 49])
    assert schedule.step_for_progress(0.5) == 25  # 24.5 rounds up
    assert schedule.step_for_progress(0.01) == 0
    with pytest.raises(ValueError, match=r"progress must be in \[0, 1\]"):
        schedule.ratio(block=0, progress=1.5, feature="q")
    with pytest.raises(ValueError, match=r"exactly one of step= .* or progress="):
        schedule.ratio(block=0, step=1, progress=0.5, feature="q")
    with pytest.raises(ValueError, match=r"exactly one of step="):
        schedule.ratio(block=0, feature="q")


def test_check_fits_names_both_shapes():
    schedule = Schedule.constant(30, 50, q=0.5)
    schedule.check_fits(30, 50)
    schedule.check_fits(30)  # steps not known yet
    schedule.check_fits(30, 10, resample=True)
    with pytest.raises(ValueError, match=r"^schedule has 30 blocks x 50 steps, model has 4 blocks x 10 steps"):
        schedule.check_fits(4, 10)
    with pytest.raises(ValueError, match=r"model has 4 blocks x 10 steps; the block count must match"):
        schedule.check_fits(4, 10, resample=True)  # blocks are never resampled
    steps_only = r"schedule has 30 blocks x 50 steps, model has 30 blocks x 10 steps.*resample\(10\)"
    with pytest.raises(ValueError, match=steps_only):
        schedule.check_fits(30, 10)
    with pytest.raises(ValueError, match=r"model has 4 blocks x an unknown number of steps"):
        schedule.check_fits(4)
    with pytest.raises(ValueError, match=r"num_blocks must be an int >= 1"):
        schedule.check_fits(0, 10)


# ---------------------------------------------------------------------- conflict rule


def test_conflict_rule_raises_on_construction():
    h = torch.zeros(2, 3, dtype=torch.float64)
    h[1, 2] = 0.2
    q = torch.full((2, 3), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"conflict rule.*1 \(block, step\).*block 1, step 2"):
        Schedule({"q": q, "h": h})
    with pytest.raises(ValueError, match=r"conflict rule"):
        Schedule.constant(2, 3, kv=0.3, h=0.2)
    ok = Schedule({"q": q.masked_fill(h > 0, 0.0), "h": h})
    assert ok.ratio(block=1, step=2, feature="h") == 0.2 and ok.ratio(block=1, step=2, feature="q") == 0.0
    assert ok.ratio(block=0, step=0, feature="q") == 0.5


def test_from_tables_conflict_resolution_is_explicit():
    tiers = {"q": torch.tensor([[7, 7, 7]]), "v": torch.tensor([[8, 8, 8]]), "h": torch.tensor([[0, 5, 9]])}
    tables = {"q": {7: 0.8}, "v": {8: 0.3}, "h": {9: 0.25}}
    with pytest.raises(ValueError, match=r"conflict rule.*block 0, step 2.*on_conflict='h'"):
        Schedule.from_tables(tiers, tables)
    resolved = Schedule.from_tables(tiers, tables, on_conflict="h")
    assert resolved.ratios("h").tolist() == [[0.0, 0.0, 0.25]]
    assert resolved.ratios("q").tolist() == [[0.8, 0.8, 0.0]]
    assert resolved.ratios("kv").tolist() == [[0.3, 0.3, 0.0]]
    with pytest.raises(ValueError, match=r"on_conflict must be one of \('error', 'h'\)"):
        Schedule.from_tables(tiers, tables, on_conflict="q")


# ---------------------------------------------------------------------- argument checks


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_from_published_errors_name_the_problem(tmp_path):
    tiers_file = PUBLISHED_SCHEDULES / "euclidean_fast-hyvideo_cache1.safetensors"
    table_file = PUBLISHED_SCHEDULES / "fast-hyvideo_cache1_0.yaml"
    with pytest.raises(FileNotFoundError, match=r"tiers_path: no such file"):
        Schedule.from_published(tmp_path / "nope.safetensors", table_file)
    with pytest.raises(FileNotFoundError, match=r"table_path: no such file"):
        Schedule.from_published(tiers_file, tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match=r"tiers_path .* not a readable safetensors file"):
        Schedule.from_published(table_file, table_file)
    with pytest.raises(ValueError, match=r"must hold a mapping"):
        Schedule.from_published(tiers_file, _write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ValueError, match=r"must hold a mapping"):
        Schedule.from_published(tiers_file, _write(tmp_path / "empty.yaml", "# nothing\n"))
    with pytest.raises(ValueError, match=r"not valid YAML"):  # safe_load refuses python tags
        Schedule.from_published(tiers_file, _write(tmp_path / "evil.yaml", "q: !!python/object/apply:os.getcwd []\n"))
    with pytest.raises(ValueError, match=r"tables\['q'\]\[7\] must be in \[0, 1\), got 1.5"):
        Schedule.from_published(tiers_file, _write(tmp_path / "big.yaml", "q:\n  7: 1.5\n"))
    with pytest.raises(ValueError, match=r"tables feature must be one of .*got 'z'"):
        Schedule.from_published(tiers_file, _write(tmp_path / "z.yaml", "z:\n  7: 0.5\n"))
    with pytest.raises(ValueError, match=r"tables feature 'k' \(keys alone\) is not supported"):
        Schedule.from_published(tiers_file, _write(tmp_path / "k.yaml", "k:\n  7: 0.5\n"))
    with pytest.raises(TypeError, match=r"tables\['q'\] threshold must be an int"):
        Schedule.from_published(tiers_file, _write(tmp_path / "t.yaml", "q:\n  seven: 0.5\n"))
    only_q = tmp_path / "only_q.safetensors"
    save_file({"q": torch.zeros(2, 3, dtype=torch.int64)}, str(only_q))
    no_v = (
        r"only_q.safetensors \+ fast-hyvideo_cache1_0.yaml: "
        r"tables\['kv'\] needs the tier tensor 'kv' or 'v'; tiers has \['q'\]"
    )
    with pytest.raises(ValueError, match=no_v):
        Schedule.from_published(only_q, table_file)
    ragged = tmp_path / "ragged.safetensors"
    save_file({"q": torch.zeros(2, 3, dtype=torch.int64), "v": torch.zeros(2, 4, dtype=torch.int64)}, str(ragged))
    with pytest.raises(ValueError, match=r"tiers\['v'\] has shape \(2, 4\) but tiers\['q'\] has \(2, 3\)"):
        Schedule.from_published(ragged, table_file)


def test_from_tables_argument_checks():
    q = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"tiers\['q'\] must be an integer tensor"):
        Schedule.from_tables({"q": q.float()}, {"q": {1: 0.5}})
    with pytest.raises(ValueError, match=r"tiers\['q'\] must have shape \(blocks, steps\)"):
        Schedule.from_tables({"q": q[0]}, {"q": {1: 0.5}})
    with pytest.raises(ValueError, match=r"tiers must hold at least one"):
        Schedule.from_tables({}, {"q": {1: 0.5}})
    with pytest.raises(TypeError, match=r"tables must be a dict"):
        Schedule.from_tables({"q": q}, [("q", 0.5)])
    with pytest.raises(ValueError, match=r"tables gives 'kv' twice"):
        Schedule.from_tables({"v": q}, {"v": {1: 0.5}, "kv": {1: 0.5}})
    with pytest.raises(TypeError, match=r"tables\['q'\]\[1\] must be a float"):
        Schedule.from_tables({"q": q}, {"q": {1: "half"}})
    # An empty table set is a valid all-zero schedule of the tiers' shape.
    empty = Schedule.from_tables({"q": q}, {})
    assert (empty.num_blocks, empty.num_steps) == (2, 3) and empty.to_dict()["features"]["q"]["mean_ratio"] == 0.0


def test_constructor_and_query_argument_checks():
    with pytest.raises(ValueError, match=r"ratios\['q'\] must be in \[0, 1\) everywhere, got 1.0 at block 0, step 1"):
        Schedule({"q": torch.tensor([[0.0, 1.0]])})
    with pytest.raises(ValueError, match=r"ratios\['q'\] must be in \[0, 1\)"):
        Schedule({"q": torch.tensor([[float("nan")]])})
    with pytest.raises(ValueError, match=r"ratios\['kv'\] has shape \(1, 3\) but ratios\['q'\] has \(1, 2\)"):
        Schedule({"q": torch.zeros(1, 2), "kv": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match=r"ratios feature must be one of .*got 'v'"):
        Schedule({"v": torch.zeros(1, 2)})
    with pytest.raises(TypeError, match=r"ratios\['q'\] must be a torch.Tensor"):
        Schedule({"q": [[0.1]]})
    with pytest.raises(ValueError, match=r"grid must have every entry >= 1"):
        Schedule({"q": torch.zeros(1, 2)}, grid=(1, 0, 1))
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\)"):
        Schedule.constant(2, 3, q=1.0)
    with pytest.raises(ValueError, match=r"blocks must be an int >= 1"):
        Schedule.constant(0, 3)
    schedule = Schedule.constant(2, 3, q=0.5)
    with pytest.raises(ValueError, match=r"block must be in \[0, 2\) \(the schedule has 2 blocks\), got 2"):
        schedule.ratio(block=2, step=0, feature="q")
    with pytest.raises(ValueError, match=r"step must be in \[0, 3\)"):
        schedule.ratio(block=0, step=-1, feature="q")
    with pytest.raises(TypeError, match=r"block must be an int"):
        schedule.ratio(block=True, step=0, feature="q")
    with pytest.raises(ValueError, match=r"feature must be one of \('q', 'kv', 'h'\), got 'v'"):
        schedule.ratio(block=0, step=0, feature="v")
    with pytest.raises(ValueError, match=r"num_steps must be an int >= 1"):
        schedule.resample(0)


# ---------------------------------------------------------------------- object behaviour


def test_schedule_is_immutable():
    schedule = Schedule.from_tables({"q": torch.tensor([[7, 1]])}, {"q": {7: 0.8}})
    with pytest.raises(AttributeError):
        schedule.num_blocks = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        schedule._ratios = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        schedule.tables["q"][7] = 0.1  # type: ignore[index]
    copy = schedule.ratios("q")
    copy.fill_(0.5)
    assert schedule.ratio(block=0, step=0, feature="q") == 0.8
    source = torch.tensor([[0.25]])
    made = Schedule({"q": source})
    source.fill_(0.75)
    assert made.ratio(block=0, step=0, feature="q") == 0.25


def test_to_dict_summary_and_repr():
    tiers = {"q": torch.tensor([[7, 1, 7, 1]]), "v": torch.tensor([[8, 8, 8, 0]])}
    schedule = Schedule.from_tables(tiers, {"q": {7: 0.8}, "v": {8: 0.3}}, model="toy")
    summary = schedule.to_dict()
    json.dumps(summary)  # report-ready
    assert summary["features"]["q"] == {"mean_ratio": 0.4, "max_ratio": 0.8, "reduced_fraction": 0.5}
    assert summary["features"]["kv"]["reduced_fraction"] == 0.75
    assert summary["features"]["h"] == {"mean_ratio": 0.0, "max_ratio": 0.0, "reduced_fraction": 0.0}
    assert summary["tables"] == {"q": {"7": 0.8}, "kv": {"8": 0.3}}
    assert (summary["num_blocks"], summary["num_steps"], summary["model"]) == (1, 4, "toy")
    text = repr(schedule)
    assert text.startswith("Schedule(num_blocks=1, num_steps=4,") and "tensor" not in text


def test_features_match_the_config():
    from asymrnr_compile.config import FEATURES as CONFIG_FEATURES

    assert FEATURES == CONFIG_FEATURES

"""Model coverage: every diffusers video transformer class, compiled whole with the asymrnr backend.

For each of the 26 configurations of :mod:`asymrnr_lab.models.diffusers_zoo` (every 3-D video
transformer class of diffusers 0.42.1, the tiny config of diffusers' own test for it, a 2 x 8 x 8
video token grid), as a user would compile it (``torch.compile(model, backend=..., dynamic=False)``,
no ``fullgraph``), this measures:

- ``graphs`` / ``breaks``: how many graphs Dynamo hands plain Inductor, and its graph-break reasons;
- ``asymrnr_graphs``: how many graphs it hands the asymrnr backend (it must be the same number);
- ``sites``: every attention site of the backend's report (kind, video tokens, what was reduced,
  and for every site left alone its reason), and attention that is not
  ``scaled_dot_product_attention`` (flex, linear, by hand) with its reason; a site counts as reduced
  only when a compiled variant rewrote it and matchings were computed;
- ``video_self_reduced``: whether a self or joint attention over the video tokens was reduced;
- ``error_vs_eager``: relative L2 error of the output against eager at q 0.5 / kv 0.3 (``min_video_tokens``
  16, every other setting the backend's default), the largest over three calls at falling timesteps;
- ``ratio0_vs_inductor``: the largest relative difference (max |a - b| / max |b|) between the backend at
  all ratios 0 and plain Inductor, over the same three calls;
- ``warnings``: what the backend told the user.

Where Dynamo cuts a model into several graphs (a data-dependent break), the model is measured a
second time with ``fullgraph=True``, which traces data-dependent sizes instead of breaking: the
row below it in the table.

    python benchmarks/coverage.py                       # all 26, Inductor: ~15 min on 2 cores
    python benchmarks/coverage.py --compiler eager      # same analysis and rewrites, graphs run eagerly: ~3 min
    python benchmarks/coverage.py --models wan,latte --json out/coverage.json

``--results`` rewrites the coverage sections of ``benchmarks/RESULTS.md`` and ``docs/coverage.md``
from the run (``--from-json PATH``: from a JSON an earlier run wrote, without measuring).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from asymrnr_compile import AsymRnRBackend
from asymrnr_compile.config import AsymRnRWarning
from asymrnr_compile.runtime import AsymRnRRuntime
from asymrnr_lab.metrics import relative_l2

#: The reduction measured: the paper's q / kv ratios, small sites allowed (the grids have 128 tokens).
REDUCE_OPTIONS: dict[str, Any] = {"q_ratio": 0.5, "kv_ratio": 0.3, "min_video_tokens": 16}
#: The identity check: every ratio 0, otherwise the same.
RATIO0_OPTIONS: dict[str, Any] = {"q_ratio": 0.0, "kv_ratio": 0.0, "min_video_tokens": 16}
#: Timesteps of the three calls, as fractions of the training range (a sampling loop counts down).
TIMESTEP_FRACTIONS = (0.9, 0.6, 0.3)
#: Site kinds whose reduction counts as "video self-attention reduced".
SELF_KINDS = ("self", "joint")
COMPILERS = ("inductor", "eager")
#: The user documentation's page whose generated table ``--results`` rewrites.
DOCS_COVERAGE = Path(__file__).resolve().parents[1] / "docs" / "coverage.md"


@dataclass
class SiteRow:
    """One attention site of the asymrnr report."""

    graph: int
    name: str
    kind: str
    video_tokens: int | None
    query_tokens: int | None
    reduced: tuple[str, ...]
    reason: str | None


@dataclass
class CoverageRow:
    """What the backend did with one zoo model (see the module docstring)."""

    name: str
    class_name: str
    graphs: int
    breaks: list[str]
    asymrnr_graphs: int
    sites: list[SiteRow]
    graph_reasons: list[str]
    warnings: list[str]
    error_vs_eager: float | None
    ratio0_vs_inductor: float | None
    seconds: float
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    fullgraph: bool = False
    with_fullgraph: CoverageRow | None = None

    @property
    def video_self_reduced(self) -> bool:
        return any(site.kind in SELF_KINDS and site.reduced and site.video_tokens for site in self.sites)

    @property
    def reduced_with_fullgraph(self) -> bool:
        """Not reduced as compiled, but with ``fullgraph=True``."""
        return not self.video_self_reduced and self.with_fullgraph is not None and \
            self.with_fullgraph.video_self_reduced

    @property
    def reduced_sites(self) -> int:
        return sum(1 for site in self.sites if site.reduced)

    @property
    def unexplained_sites(self) -> list[SiteRow]:
        """Sites left alone without a reason (a defect of the report)."""
        return [site for site in self.sites if not site.reduced and not site.reason]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "video_self_reduced": self.video_self_reduced, "reduced_sites": self.reduced_sites,
                "with_fullgraph": self.with_fullgraph.to_dict() if self.with_fullgraph else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoverageRow:
        """The row :meth:`to_dict` wrote (derived entries dropped)."""
        fields = {k: v for k, v in data.items() if k not in ("video_self_reduced", "reduced_sites")}
        fields["sites"] = [SiteRow(**{**site, "reduced": tuple(site["reduced"])}) for site in data["sites"]]
        fields["with_fullgraph"] = cls.from_dict(data["with_fullgraph"]) if data.get("with_fullgraph") else None
        return cls(**fields)


def first_tensor(output: Any) -> torch.Tensor:
    """The model's output tensor: element 0 of a tuple, or the tensor itself (Kandinsky 5 returns a
    bare tensor with ``return_dict=False``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find the output tensor in a {type(output).__name__}")


def max_relative_difference(value: torch.Tensor, reference: torch.Tensor) -> float:
    scale = reference.abs().max().clamp_min(1e-12)
    return float((value.float() - reference.float()).abs().max() / scale)


def call_inputs(inputs: dict[str, Any], timestep_arg: str) -> list[dict[str, Any]]:
    """The inputs of the three calls: the same tensors, the timestep at each of
    :data:`TIMESTEP_FRACTIONS` of the training range (shape and dtype kept)."""
    from asymrnr_lab.models.diffusers_zoo import NUM_TRAIN_TIMESTEPS

    reference = inputs[timestep_arg]
    return [{**inputs, timestep_arg: torch.full_like(reference, fraction * NUM_TRAIN_TIMESTEPS)}
            for fraction in TIMESTEP_FRACTIONS]


def eager_compiler(gm: torch.fx.GraphModule, mode: str | None = None) -> Callable[..., Any]:
    """Stands in for Inductor: the backend's graphs (variants, attention subgraphs) run as they are."""

    def compile_graph(graph: torch.fx.GraphModule, example_inputs: Any) -> Callable[..., Any]:
        return graph.forward

    return compile_graph


@contextlib.contextmanager
def compiler_scope(compiler: str) -> Iterator[None]:
    """With ``"eager"``, the backend hands its graphs to :func:`eager_compiler` instead of Inductor."""
    if compiler == "inductor":
        yield
    else:
        with mock.patch("asymrnr_compile.backend.inductor_compiler", eager_compiler):
            yield


def _plain_backend(compiler: str, graphs: list[torch.fx.GraphModule]) -> Callable[..., Any]:
    def backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
        graphs.append(gm)
        if compiler == "eager":
            return gm.forward
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, list(example_inputs))

    return backend


def _run(compiled: Callable[..., Any], calls: list[dict[str, Any]]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [first_tensor(compiled(**inputs)).clone() for inputs in calls]


def _break_reasons() -> list[str]:
    reasons = [str(reason).splitlines()[0] for reason in counters["graph_break"]]
    return sorted(set(reasons))


def _rewritten(runtime: Any) -> set[int]:
    """Sites a compiled variant of ``runtime`` really rewrote (none for a graph compiled unchanged)."""
    return runtime.rewritten_sites if isinstance(runtime, AsymRnRRuntime) else set()


def _sites(backend: AsymRnRBackend) -> tuple[list[SiteRow], list[str]]:
    report = backend.report().to_dict()
    sites: list[SiteRow] = []
    graph_reasons: list[str] = []
    for g, (runtime, graph) in enumerate(zip(backend.graphs, report["graphs"])):
        if graph.get("fallback_reason"):
            graph_reasons.append(graph["fallback_reason"])
        rewritten = _rewritten(runtime) if graph.get("cache_misses", 0) > 0 else set()
        for site in graph.get("sites", []):
            applied = tuple(sorted(site.get("applied") or {})) if site["index"] in rewritten else ()
            sites.append(SiteRow(g, site["name"], site["kind"], site.get("video_tokens"), site.get("query_tokens"),
                                 applied, None if applied else site.get("reason")))
        for other in graph.get("other_attention", []):  # attention over video tokens that is not SDPA
            sites.append(SiteRow(g, other["name"], other["kind"], None, None, (), other["reason"]))
    return sites, graph_reasons


def measure(name: str, compiler: str = "inductor", seed: int = 0, *, fullgraph: bool = False) -> CoverageRow:
    """Compile zoo model ``name`` three ways (plain, asymrnr ratio 0, asymrnr q 0.5 / kv 0.3) and
    compare them (see the module docstring); ``fullgraph`` is ``torch.compile``'s."""
    from asymrnr_lab.models.diffusers_zoo import ZOO, build

    if compiler not in COMPILERS:
        raise ValueError(f"compiler must be one of {COMPILERS}, got {compiler!r}")
    entry = ZOO[name]
    start = time.perf_counter()
    model, inputs = build(name, seed)
    calls = call_inputs(inputs, entry.timestep_arg)
    eager = _run(model, calls)

    torch._dynamo.reset()
    counters.clear()
    plain_graphs: list[torch.fx.GraphModule] = []
    plain = _run(torch.compile(model, backend=_plain_backend(compiler, plain_graphs), dynamic=False,
                               fullgraph=fullgraph), calls)
    breaks = _break_reasons()

    torch._dynamo.reset()
    with compiler_scope(compiler):
        ratio0 = _run(torch.compile(model, backend=AsymRnRBackend(**RATIO0_OPTIONS), dynamic=False,
                                    fullgraph=fullgraph), calls)
    torch._dynamo.reset()
    backend = AsymRnRBackend(**REDUCE_OPTIONS)
    with compiler_scope(compiler), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AsymRnRWarning)
        reduced = _run(torch.compile(model, backend=backend, dynamic=False, fullgraph=fullgraph), calls)
    torch._dynamo.reset()
    sites, graph_reasons = _sites(backend)
    return CoverageRow(
        name=name, class_name=entry.class_name, graphs=len(plain_graphs), breaks=breaks,
        asymrnr_graphs=len(backend.graphs), sites=sites, graph_reasons=graph_reasons,
        warnings=sorted({str(w.message) for w in caught if issubclass(w.category, AsymRnRWarning)}),
        error_vs_eager=max(relative_l2(r, e) for r, e in zip(reduced, eager)),
        ratio0_vs_inductor=max(max_relative_difference(r, p) for r, p in zip(ratio0, plain)),
        seconds=time.perf_counter() - start, fullgraph=fullgraph,
    )


def measure_with_fallback(name: str, compiler: str = "inductor") -> CoverageRow:
    """:func:`measure` as a user compiles (no ``fullgraph``); where Dynamo cuts the model into
    several graphs, also measured with ``fullgraph=True`` (``with_fullgraph``), which captures
    data-dependent sizes instead of breaking and is what such a model needs to be one graph."""
    row = measure(name, compiler)
    if row.graphs > 1:
        try:
            row.with_fullgraph = measure(name, compiler, fullgraph=True)
        except Exception as error:  # noqa: BLE001 - Dynamo refuses fullgraph for this model: say so
            torch._dynamo.reset()
            row.notes.append(f"fullgraph=True fails: {type(error).__name__}: {str(error).splitlines()[0]}")
    return row


def _safe_measure(name: str, compiler: str) -> CoverageRow:
    from asymrnr_lab.models.diffusers_zoo import ZOO

    start = time.perf_counter()
    try:
        return measure_with_fallback(name, compiler)
    except Exception as error:  # noqa: BLE001 - one broken model must not hide the others' rows
        torch._dynamo.reset()
        return CoverageRow(name, ZOO[name].class_name, 0, [], 0, [], [], [], None, None,
                           time.perf_counter() - start, error=f"{type(error).__name__}: {error}")


def _reasons(row: CoverageRow) -> str:
    reasons: dict[str, int] = {}
    for site in row.sites:
        if not site.reduced:
            key = f"{site.kind}: {site.reason}"
            reasons[key] = reasons.get(key, 0) + 1
    return "; ".join(f"{reason}" + (f" (x{n})" if n > 1 else "") for reason, n in reasons.items())


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown_table(rows: Sequence[CoverageRow]) -> str:
    """The coverage table (one row per configuration)."""
    lines = ["| model | class | graphs (plain / asymrnr) | sites | reduced | video self-attention reduced | "
             "error vs eager (q 0.5 / kv 0.3) | ratio 0 vs Inductor | sites left alone, and why |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.error:
            lines.append(f"| {row.name} | {row.class_name} | | | | **failed** | | | {row.error} |")
            continue
        lines.append(_table_row(row, row.name, row.class_name))
        if row.with_fullgraph is not None:
            lines.append(_table_row(row.with_fullgraph, "", "the same, `fullgraph=True`"))
    return "\n".join(lines)


def _table_row(row: CoverageRow, name: str, label: str) -> str:
    notes = "; ".join([_reasons(row), *row.notes]).strip("; ")
    return (f"| {name} | {label} | {row.graphs} / {row.asymrnr_graphs} | {len(row.sites)} | "
            f"{row.reduced_sites} | {'yes' if row.video_self_reduced else '**no**'} | "
            f"{_fmt(row.error_vs_eager, '.3f')} | {_fmt(row.ratio0_vs_inductor, '.1e')} | {notes} |")


def summary(rows: Sequence[CoverageRow]) -> str:
    reduced = sum(row.video_self_reduced for row in rows)
    with_fullgraph = [row.name for row in rows if row.reduced_with_fullgraph]
    every = [row for row in rows if not row.error] + [row.with_fullgraph for row in rows if row.with_fullgraph]
    unexplained = sum(len(row.unexplained_sites) for row in every)
    same_graphs = sum(row.graphs == row.asymrnr_graphs for row in every)
    identical = sum(row.ratio0_vs_inductor is not None and row.ratio0_vs_inductor <= 1e-5 for row in every)
    extra = f", {len(with_fullgraph)} more with fullgraph=True ({', '.join(with_fullgraph)})" if with_fullgraph else ""
    return (f"{reduced} of {len(rows)} configurations have their video self-attention reduced as compiled{extra}; "
            f"{unexplained} sites left alone without a reason; {same_graphs} of {len(every)} compilations get as many "
            f"graphs as plain Inductor; ratio 0 equals plain Inductor (<= 1e-5) in {identical} of {len(every)}.")


def main(argv: Sequence[str] | None = None) -> int:
    from asymrnr_lab.models.diffusers_zoo import ZOO

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated zoo names (default: all 26)")
    parser.add_argument("--compiler", choices=COMPILERS, default="inductor",
                        help="inductor (default), or eager: the same graphs and rewrites, run uncompiled")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--results", action="store_true",
                        help="rewrite the coverage sections of benchmarks/RESULTS.md and docs/coverage.md")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="take the rows from a JSON this command wrote instead of measuring")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(ZOO))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(ZOO)}")
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        rows = [CoverageRow.from_dict(row) for row in saved["rows"]]
        args.compiler, date = saved["compiler"], saved["date"]
        names = []
    else:
        rows, date = [], datetime.date.today().isoformat()
    for k, name in enumerate(names, 1):
        print(f"[{k}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        row = _safe_measure(name, args.compiler)
        reduced = "yes" if row.video_self_reduced else "with fullgraph=True" if row.reduced_with_fullgraph else "no"
        status = row.error or (f"{row.reduced_sites}/{len(row.sites)} sites reduced, video self {reduced}, "
                               f"{row.seconds:.0f} s")
        print(f"    {status}", file=sys.stderr, flush=True)
        rows.append(row)
    table = markdown_table(rows)
    print(table)
    print()
    print(summary(rows))
    command = "python benchmarks/coverage.py" + (f" --compiler {args.compiler}" if args.compiler != "inductor" else "")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "compiler": args.compiler, "date": date,
                                         "options": REDUCE_OPTIONS, "rows": [row.to_dict() for row in rows]},
                                        indent=1))
    if args.results:
        from results_md import machine_info, replace_section

        body = (f"## Model coverage: every diffusers video transformer class\n\n"
                f"{machine_info('cpu')}; {date}. Command: `{command}` (the JSON: `--json`). The tiny configs of "
                f"diffusers' own tests, 2 x 8 x 8 video tokens, q 0.5 / kv 0.3, `min_video_tokens` 16, three calls "
                f"at falling timesteps; what each column means: [docs/coverage.md](../docs/coverage.md). No timings: "
                f"the figures are errors and counts, which do not depend on the machine's load.\n\n"
                f"{summary(rows)}\n\n{table}\n")
        replace_section("coverage", body)
        replace_section("coverage-table", f"Measured {date} with `{command}`:\n\n{summary(rows)}\n\n{table}\n",
                        path=DOCS_COVERAGE)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())

"""Run a tiny diffusers transformer under diffusers' context parallelism (Ulysses) on CPU ranks.

:func:`run_ranks` spawns ``world_size`` processes (``torch.multiprocessing``, start method
``spawn``) that form a gloo process group on the loopback interface (``127.0.0.1``, a free
port), each build the same seeded tiny model (:func:`asymrnr_lab.models.diffusers_models.build`),
call ``enable_parallelism(ContextParallelConfig(ulysses_degree=world_size))`` and run the same
steps under ``torch.compile(..., backend=AsymRnRBackend(config))``. Each rank writes its
outputs, its report, the proof that it reduced (``reduction_checks.reduction_evidence``: per
graph, no fallback and the sites its variants rewrote), Dynamo's graph counts and the input
bytes of every collective call of the last step (profiled: the steady state, compilation done)
to ``out_dir/rank{r}.pt``; the parent waits at most ``timeout_s`` and kills the ranks if they
have not finished. With ``ASYMRNR_FORCE_FALLBACK=1`` in the environment (``pytest
--asymrnr-force-fallback``) every rank's rewrites fail, as in the test process.

Three things every rank does, and why (diffusers 0.42.1, torch 2.13, CPU):

- **The device count.** ``enable_parallelism`` picks each rank's device with
  ``rank % torch.accelerator.device_count()``, which is 0 on a CPU-only build of torch
  (ZeroDivisionError). The rank process, and only it, reports one device; the model stays on
  the CPU. Nothing else reads the count here; on a machine with accelerators nothing is patched.
- **One eager call before compiling.** diffusers' split hook on a block (Wan: ``blocks.0``)
  finds a positional argument with ``inspect.signature`` on its first call, which Dynamo cannot
  trace: compiled first, every block becomes its own graph and no graph holds the patch
  embedding. One eager call fills the hook's cache.
- **Logging inside the hooks.** Wan's plan declares a 2-D (per-token) ``timestep``; with the
  usual 1-D one the hook logs a warning on every call (``logger.warning_once``, from
  transformers), and a logging call breaks Dynamo's graph. The compile runs with that method in
  ``torch._dynamo.config.ignore_logging_functions`` (scoped with ``config.patch``).

With these the whole transformer is one graph per rank, as on a single device.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

LOOPBACK = "127.0.0.1"
TESTS = Path(__file__).resolve().parents[1]  # reduction_checks.py


@dataclass(frozen=True)
class CPCase:
    """One run: the family (a key of ``diffusers_models.BUILDERS``), its builder options,
    input overrides (``None`` removes an optional input), the asymrnr options and the step
    timesteps (one model call per step). ``eager_graphs``: the graphs asymrnr would hand
    Inductor run as they are (the same capture, analysis, rewrite and exchange; seconds instead
    of a minute of compiling per rank)."""

    family: str
    options: dict[str, Any] = field(default_factory=dict)
    input_overrides: dict[str, Any] = field(default_factory=dict)
    asymrnr: dict[str, Any] = field(default_factory=dict)
    timesteps: tuple[float, ...] = (999.0, 749.0)
    eager_graphs: bool = False


def use_eager_graphs(case: CPCase) -> None:
    """In this process, make asymrnr run its graphs uncompiled when ``case.eager_graphs``."""
    if case.eager_graphs:
        from helpers import eager_compiler

        import asymrnr_compile.backend

        asymrnr_compile.backend.inductor_compiler = eager_compiler


def build_case(case: CPCase) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The seeded model and its inputs, the same in every process."""
    from asymrnr_lab.models.diffusers_models import build

    model, inputs = build(case.family, **case.options)
    return model, {**inputs, **case.input_overrides, "return_dict": False}


def run_steps(model: torch.nn.Module, inputs: dict[str, Any], timesteps: tuple[float, ...],
              backend: Any, last_step: Any = None) -> tuple[list[torch.Tensor], list[int]]:
    """The outputs of one compiled call per timestep, and Dynamo's unique graph count after each.
    ``last_step``: a context manager entered around the last call (a profiler)."""
    from torch._dynamo.utils import counters

    compiled = torch.compile(model, backend=backend, dynamic=False)
    outputs, graphs = [], []
    with torch.no_grad():
        for k, t in enumerate(timesteps):
            step_inputs = {**inputs, "timestep": torch.full_like(inputs["timestep"], t)}
            last = last_step if last_step is not None and k == len(timesteps) - 1 else contextlib.nullcontext()
            with last:
                outputs.append(compiled(**step_inputs)[0])
            graphs.append(int(counters["stats"]["unique_graphs"]))
    return outputs, graphs


#: The functional collectives diffusers' context parallelism calls, as the profiler names them.
COLLECTIVES = ("_c10d_functional::all_to_all_single", "_c10d_functional::all_gather_into_tensor")


def collective_payloads(events: Any) -> dict[str, list[int]]:
    """Per collective op, the input bytes of each call (from a profile with ``record_shapes``)."""
    found: dict[str, list[int]] = {name: [] for name in COLLECTIVES}
    for event in events:
        if event.name in found:
            shape = event.input_shapes[0]
            dtype = event.input_types[0] if getattr(event, "input_types", None) else "float"
            element = torch.empty((), dtype=_DTYPES.get(dtype, torch.float32)).element_size()
            found[event.name].append(int(torch.Size(shape).numel()) * element)
    return found


_DTYPES = {"float": torch.float32, "c10::BFloat16": torch.bfloat16, "c10::Half": torch.float16, "double": torch.float64}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _rank(rank: int, world_size: int, port: int, case: CPCase, out_dir: str) -> None:
    import torch._dynamo
    import torch.distributed as dist
    from torch._dynamo.utils import counters

    from asymrnr_compile import AsymRnRBackend, AsymRnRConfig

    torch.set_num_threads(1)
    if str(TESTS) not in sys.path:  # run from benchmarks/context_parallel.py: tests/ is not on the path
        sys.path.append(str(TESTS))
    from reduction_checks import FORCE_FALLBACK_ENV, force_fallback, reduction_evidence

    if os.environ.get(FORCE_FALLBACK_ENV) == "1":  # pytest --asymrnr-force-fallback (tests/conftest.py)
        force_fallback()
    os.environ.update(MASTER_ADDR=LOOPBACK, MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        if torch.accelerator.device_count() == 0:  # CPU build: diffusers divides by it (module docstring)
            torch.accelerator.device_count = lambda: 1
        from diffusers import ContextParallelConfig

        use_eager_graphs(case)
        model, inputs = build_case(case)
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world_size))
        with torch.no_grad():
            model(**inputs)  # fills the split hooks' signature cache (module docstring)
        backend = AsymRnRBackend(AsymRnRConfig(**case.asymrnr))
        counters.clear()
        start = time.perf_counter()
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
        with torch._dynamo.config.patch(ignore_logging_functions={logging.Logger.warning_once}):
            outputs, graphs = run_steps(model, inputs, case.timesteps, backend, last_step=prof)
        torch.save({"outputs": outputs, "graphs": graphs, "report": backend.report().to_dict(),
                    "reduction": reduction_evidence(backend),
                    "seconds": time.perf_counter() - start, "collectives": collective_payloads(prof.events())},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(case: CPCase, out_dir: Path, world_size: int = 2, timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """Run ``case`` on ``world_size`` CPU ranks (module docstring); the per-rank results.

    Raises:
        TimeoutError: the ranks did not finish within ``timeout_s`` (they are killed).
    """
    context = mp.start_processes(_rank, args=(world_size, free_port(), case, str(out_dir)),
                                 nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world_size} ranks did not finish within {timeout_s:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(world_size)]

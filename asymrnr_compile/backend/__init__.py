"""The ``torch.compile`` backend: analysis -> plan -> rewrite -> Inductor.

Two ways to use it::

    # 1. by name (registered through the ``torch_dynamo_backends`` entry point; no import needed)
    compiled = torch.compile(model, backend="asymrnr", options={"q_ratio": 0.5, "kv_ratio": 0.3})
    asymrnr_compile.last_backend().report()        # the report of the string form

    # 2. as an object, to keep a handle on its report and state
    backend = asymrnr_compile.AsymRnRBackend(asymrnr_compile.AsymRnRConfig(q_ratio=0.5))
    compiled = torch.compile(model, backend=backend)
    backend.report().to_dict(); backend.reset()    # new video: forget cached matchings

- :mod:`~asymrnr_compile.backend.driver`: :class:`AsymRnRBackend`, per captured graph analysis,
  plan and the runtime that rewrites and compiles (or the graph compiled unchanged, and why);
- :mod:`~asymrnr_compile.backend.graph_checks`: what leaves a whole graph unchanged (symbolic
  shapes, attention written by hand, settings regional compilation cannot honour);
- :mod:`~asymrnr_compile.backend.recompiles`: which graph is a Dynamo recompile of an earlier one;
- :mod:`~asymrnr_compile.backend.report`: :class:`AsymRnRReport`;
- :mod:`~asymrnr_compile.backend.registry`: the string form, :func:`asymrnr` (the entry point
  ``asymrnr_compile.backend:asymrnr``) and :func:`last_backend`.

``inductor_compiler`` and ``analyse_graph`` are the driver's seams: it reads them from this
package on every call, so ``monkeypatch.setattr("asymrnr_compile.backend.inductor_compiler", ...)``
stands in for Inductor.
"""

from asymrnr_compile.analysis.find_sites import analyse_graph
from asymrnr_compile.backend.driver import AsymRnRBackend
from asymrnr_compile.backend.registry import asymrnr, last_backend
from asymrnr_compile.backend.report import AsymRnRReport
from asymrnr_compile.runtime.compile_subgraphs import inductor_compiler

__all__ = ["AsymRnRBackend", "AsymRnRReport", "analyse_graph", "asymrnr", "inductor_compiler", "last_backend"]

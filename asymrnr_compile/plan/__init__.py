"""Planning: what to reduce, where and when.

- :mod:`~asymrnr_compile.vocabulary` (below the plan): the reducible features ``q``, ``kv``, ``h`` (one place).
- :mod:`~asymrnr_compile.plan.seeds`: the seed of every split and random selection.
- :mod:`~asymrnr_compile.plan.select_sites`: which sites and features the configuration reduces
  and how many tokens each keeps (shared by the backend and the profiler).
- :mod:`~asymrnr_compile.plan.reduction_plan`: the hashable per-call plan a compiled variant is
  made for, and the names of the cache tensors that cross variants.
- :mod:`~asymrnr_compile.plan.schedule`: per-block, per-step ratio schedules;
  :mod:`~asymrnr_compile.plan.published` imports the released AsymRnR schedules;
  :mod:`~asymrnr_compile.plan.schedule_driver` turns a schedule into per-step kept tokens.

This package imports nothing on import, so that the analysis can use
:mod:`~asymrnr_compile.vocabulary` without an import cycle.
"""

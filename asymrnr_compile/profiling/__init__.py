"""Profiling: how redundant each site's tokens are, and a schedule that exploits it (paper Sec. 3.4).

- :mod:`~asymrnr_compile.profiling.profiler`: :func:`profile` runs the user's sampling loop under
  a profiling backend and returns a :class:`RedundancyProfile`.
- :mod:`~asymrnr_compile.profiling.calibrate`: :func:`calibrate` turns a profile into a
  :class:`~asymrnr_compile.plan.schedule.Schedule` for a target speedup.
- :mod:`~asymrnr_compile.profiling.report`: ``report.md``, ``report.json`` and heatmaps.
"""

from asymrnr_compile.profiling.calibrate import calibrate, predicted_speedup
from asymrnr_compile.profiling.profiler import ProfilingBackend, RedundancyProfile, profile

__all__ = ["ProfilingBackend", "RedundancyProfile", "calibrate", "predicted_speedup", "profile"]

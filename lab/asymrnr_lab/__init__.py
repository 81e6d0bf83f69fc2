"""asymrnr_lab: the lab around :mod:`asymrnr_compile`.

The compiler (``torch.compile(model, backend="asymrnr")``) needs none of this. The lab holds what
its demo, tests and benchmarks run: :mod:`asymrnr_lab.models` (the bundled reference DiT, the
diffusers model zoo), :mod:`asymrnr_lab.synthetic` (the synthetic text-to-video task, its trained
models, trainer and comparison harness), :mod:`asymrnr_lab.sampling` (the sampling loop) and
:mod:`asymrnr_lab.cli` (the ``asymrnr-compile`` command). It imports the compiler; the compiler
never imports it.
"""

__version__ = "0.1.0"

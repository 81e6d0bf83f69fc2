"""The compiler is its own distribution: ``pip install -e .`` ships ``asymrnr_compile`` alone,
and the compiler runs (and reduces) with the lab (``asymrnr_lab``, in ``lab/``) absent."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# Runs in a fresh interpreter where importing asymrnr_lab raises: the toy DiT (tests/toy_dit.py,
# torch only) compiled with asymrnr at fixed ratios, then the reduction evidence as JSON.
WITHOUT_LAB = """
import importlib.abc, json, sys

class NoLab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "asymrnr_lab":
            raise ImportError(f"{name}: the lab is not installed")
        return None

sys.meta_path.insert(0, NoLab())
sys.path.insert(0, sys.argv[1])
import torch
from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from reduction_checks import reduction_evidence
from toy_dit import LATENT, TEXT, TEXT_DIM, ToyDiT

generator = torch.Generator().manual_seed(0)
inputs = {"hidden_states": torch.randn(2, *LATENT, generator=generator),
          "encoder_hidden_states": torch.randn(2, TEXT, TEXT_DIM, generator=generator),
          "timestep": torch.full((2,), 500.0)}
backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=16))
with torch.no_grad():
    torch.compile(ToyDiT(), backend=backend, dynamic=False)(**inputs)
print(json.dumps({"evidence": reduction_evidence(backend),
                  "lab_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "asymrnr_lab")}))
"""


def test_the_compiler_compiles_and_reduces_without_the_lab():
    from reduction_checks import assert_evidence_reduced

    result = subprocess.run([sys.executable, "-c", WITHOUT_LAB, str(TESTS)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["lab_loaded"] == []
    assert_evidence_reduced(output["evidence"])


def test_the_compiler_wheel_holds_no_lab_and_no_weights(tmp_path):
    """Builds the root distribution's wheel (setuptools, in about two seconds)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, timeout=600)
    (wheel,) = tmp_path.glob("asymrnr_compile-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if "/" in name and ".dist-info" not in name}
    assert packages == {"asymrnr_compile"}
    assert not [name for name in names if not name.endswith(".py") and ".dist-info" not in name]
    assert {"asymrnr_compile/backend/__init__.py", "asymrnr_compile/backend/driver.py"} <= set(names)

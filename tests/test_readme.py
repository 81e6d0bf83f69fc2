"""The README's two set-up commands stay in step with CI and the command line."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_starts_with_the_demo_and_test_commands_and_ci_runs_the_latter():
    readme = (ROOT / "README.md").read_text()
    demo, tests = _bash_blocks(readme)[:2]
    assert demo.endswith("asymrnr-compile demo") and demo.startswith("pip install torch==2.13.0")
    assert "pytest" in tests and tests.startswith("pip install torch==2.13.0")
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci_lines == [tests]


def test_readme_options_table_lists_every_config_field():
    from asymrnr_compile.config import AsymRnRConfig

    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", readme, flags=re.M))
    fields = set(AsymRnRConfig.option_names()) - {"schedule"}
    assert fields <= documented, f"undocumented options: {sorted(fields - documented)}"

"""Replace one generated section of ``benchmarks/RESULTS.md``, leaving the rest as it is.

Each generating script owns the text between its two markers ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``; the section is appended at the end of the file the first time.
:func:`machine_info` is the machine line every generated section carries.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of section ``name``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(name: str, body: str, path: Path = RESULTS) -> Path:
    """Write ``body`` between the markers of ``name`` in ``path`` (appending them if absent)."""
    begin, end = markers(name)
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path


def machine_info(device: str) -> str:
    """CPU model, cores, torch version and threads (and the GPU's name on cuda)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{platform.system()} {platform.release()}")
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return text

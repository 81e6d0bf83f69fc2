"""``python -m asymrnr_compile``: the command line."""

from asymrnr_compile.cli import main

raise SystemExit(main())

"""``python -m asymrnr_lab``: the command line."""

from asymrnr_lab.cli import main

raise SystemExit(main())

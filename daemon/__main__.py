"""`python -m daemon` is the same as the `subwatch` console script."""

from .cli import main

raise SystemExit(main())

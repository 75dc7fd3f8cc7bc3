"""``python -m cvx_core``: the command line (see :mod:`cvx_core.cli`)."""

from cvx_core.cli import main

raise SystemExit(main())

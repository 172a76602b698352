"""``python -m joinadmin_agent``: the same entry point as the console script."""

from joinadmin_agent.cli import main

raise SystemExit(main())

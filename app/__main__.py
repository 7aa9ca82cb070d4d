"""`python -m bitsmith.app` starts the desktop app."""

from bitsmith.app.main import main

raise SystemExit(main())

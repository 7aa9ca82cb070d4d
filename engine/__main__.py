"""`python -m bitsmith.engine` is the `bitsmith` command."""

from bitsmith.engine.cli import main

raise SystemExit(main())

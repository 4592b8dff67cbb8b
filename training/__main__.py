"""`python -m training ...`: see `training.main`."""

from training.main import main

raise SystemExit(main())

"""``python3 -m pvinit.supervisor``: see :func:`pvinit.supervisor.main.main`."""

import sys

from pvinit.supervisor.main import main

sys.exit(main())

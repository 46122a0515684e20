from __future__ import annotations

import sys

from extauthz.cli import main

sys.exit(main())

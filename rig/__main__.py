"""Entry point for `python -m rig`."""
from __future__ import annotations

import sys

from rig.cli import main

sys.exit(main())

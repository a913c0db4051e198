"""`python -m kd3d_core` runs the kd3d command line."""
import sys

from kd3d_core.cli import main

sys.exit(main())

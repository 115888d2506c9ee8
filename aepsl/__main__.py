"""``python -m aepsl``: run a profile's stages, then its notebooks through papermill; the runner
itself is :mod:`aepsl.engine.run_notebooks`."""
import sys

from .engine.run_notebooks import main

sys.exit(main())

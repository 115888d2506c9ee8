"""``python -m aepsl.stages``: compute a profile's stages without the notebooks (also under torchrun);
the runner itself is :mod:`aepsl.engine.run_stages`."""
import sys

from .engine.run_stages import main

if __name__ == "__main__":
    sys.exit(main())

"""aepsl: weakly-supervised semantic segmentation from image-level labels, as a notebook book.

Stages (each one module with a ``run(params) -> metrics`` entry point):
data (:mod:`aepsl.data.stage`), CAM (:mod:`aepsl.cam`); the pipeline runs the notebooks that
call them (:mod:`aepsl.pipeline`, ``python -m aepsl``).
"""
__version__ = "0.1.0"

"""aepsl: weakly-supervised semantic segmentation from image-level labels, as a notebook book.

The package has three kinds of module:

- the methods — :mod:`aepsl.methods` (CAM, adversarial erasing, PSL and PSL++, the dense CRF,
  AffinityNet's random walk, HFPL, the metrics), :mod:`aepsl.models` (the networks) and
  :mod:`aepsl.data` (the scenes, the VOC-format reader);
- the machinery that runs them — :mod:`aepsl.engine` (parameters, the stage registry, the stage
  wrapper, artifacts, the training loop, several processes, the two runners ``python -m aepsl``
  and ``python -m aepsl.stages``);
- what the book shows — :mod:`aepsl.book` (records read back, tables, sentences, figures, the
  browser check).
"""
__version__ = "0.1.0"

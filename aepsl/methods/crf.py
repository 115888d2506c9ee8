"""Fully connected CRF (Krähenbühl & Koltun 2011) on pydensecrf (the `pydensecrf2` wheel).

Unary: -log of the class probabilities. Pairwise: a Gaussian smoothness kernel and a
bilateral appearance kernel (pixels close in position *and* colour prefer one label).
Defaults are PSA's: Gaussian sxy 3, compat 3; bilateral sxy 80, srgb 13, compat 10; 10 steps.

Fault injection for tests: with ``AEPSL_TEST_HOLD_CRF=<call>:<file>`` in the environment, the
``<call>``-th call of :func:`crf_batch` in this process (1-based) creates ``<file>`` and waits
there until the process is killed (a kill -9 in the middle of a stage's CRF pass).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CRFParams:
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bi_sxy: float = 80.0
    bi_srgb: float = 13.0
    bi_compat: float = 10.0
    iterations: int = 10


def crf_refine(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Refined probabilities [C,H,W] for one image (HxWx3 uint8) and its probabilities [C,H,W]."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = probs.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"crf_refine: image {image.shape[:2]} and probabilities {(h, w)} differ in size")
    d = dcrf.DenseCRF2D(w, h, c)
    probs = np.clip(probs.astype(np.float32), 1e-8, 1.0)
    d.setUnaryEnergy(np.require(unary_from_softmax(probs / probs.sum(0, keepdims=True)), np.float32, ["C", "W"]))
    d.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    d.addPairwiseBilateral(sxy=params.bi_sxy, srgb=params.bi_srgb, rgbim=np.require(image, np.uint8, ["C", "W"]),
                           compat=params.bi_compat)
    q = d.inference(params.iterations)
    return np.asarray(q, np.float32).reshape(c, h, w)


def crf_labels(image: np.ndarray, probs: np.ndarray, labels: np.ndarray | None = None,
               params: CRFParams = CRFParams()) -> np.ndarray:
    """CRF-refined label map (uint8 HxW). ``labels`` maps channel index -> class id (default identity)."""
    q = crf_refine(image, probs, params)
    out = q.argmax(0)
    return (out if labels is None else np.asarray(labels)[out]).astype(np.uint8)


def keep_erased_classes(pred: np.ndarray, refined: np.ndarray, class_ids, keep: float) -> np.ndarray:
    """``refined`` (a CRF-refined label map) with the pixels of ``pred`` (the map the CRF refined)
    put back for every class of ``class_ids`` (the image's labels) of which the CRF kept less than
    ``keep`` of the pixels ``pred`` gave it: the CRF may smooth a weakly predicted class away, but
    the image is known to hold it. Background and unlabelled classes are never put back."""
    out = refined.copy()
    for c in class_ids:
        c = int(c)
        if c in (0, 255):
            continue
        predicted = pred == c
        n = int(predicted.sum())
        if n and int((refined == c).sum()) < keep * n:
            out[predicted] = c
    return out


def _work(args):
    image, probs, labels, params = args
    return crf_labels(image, probs, labels, params)


_CALLS = [0]


def _test_hold() -> None:
    """Wait here for a SIGKILL if ``AEPSL_TEST_HOLD_CRF`` names this call (see the module docstring)."""
    value = os.environ.get("AEPSL_TEST_HOLD_CRF")
    if not value:
        return
    _CALLS[0] += 1
    call, marker = value.split(":", 1)
    if _CALLS[0] == int(call):
        Path(marker).write_text(f"crf_batch: holding in call {call} (pid {os.getpid()})\n")
        while True:
            time.sleep(3600)


def _pool(workers: int):
    return get_context("fork").Pool(workers)


@contextmanager
def crf_pool(workers: int):
    """A pool of ``workers`` CRF processes kept open for many :func:`crf_batch` calls (None when
    ``workers`` is 0). Forking a pool per call costs a large process, such as a training one, about
    what the second core saves on a small batch; a pool forked once does not. Its workers end
    when their parent does, even a parent killed with -9 (they read end-of-file)."""
    if workers <= 0:
        yield None
        return
    pool = _pool(workers)
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


def crf_batch(images, probs, labels=None, params: CRFParams = CRFParams(), workers: int = 0, pool=None):
    """Refine many images; ``pool`` (from :func:`crf_pool`) runs them there, else ``workers`` > 0
    forks a process pool for this call, 0 runs in this process."""
    _test_hold()
    labels = labels if labels is not None else [None] * len(images)
    jobs = [(im, p, lab, params) for im, p, lab in zip(images, probs, labels)]
    if pool is not None and len(jobs) >= 2:
        return pool.map(_work, jobs, chunksize=max(1, len(jobs) // (4 * pool._processes)))
    if workers <= 0 or len(jobs) < 2:
        return [_work(j) for j in jobs]
    with _pool(workers) as pool:
        return pool.map(_work, jobs, chunksize=max(1, len(jobs) // (4 * workers)))

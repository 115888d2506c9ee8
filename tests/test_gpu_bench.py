"""benchmarks/gpu_step.py runs end to end (smoke test with --small on any device; nothing timed)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from aepsl.engine.artifacts import REPO_DIR

SCRIPT = REPO_DIR / "benchmarks" / "gpu_step.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_prints_and_appends_rows(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("fp32_eager_img_s", "ours_img_s", "cam_img_s", "cam_single_img_s", "speedup"):
        assert result[key] > 0, key
    assert result["smoke"] is True and result["device"].startswith("CPU")
    assert result["command"].endswith(f"--small --device cpu --out {out}")
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 20")]
    assert text.startswith("# GPU speed") and len(rows) == 1 and "*smoke*" in rows[0]
    # a second run appends a row below the first, the header stays single
    again = _module().main(["--small", "--device", "cpu", "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 20")]
    assert len(rows) == 2 and out.read_text().count("# GPU speed") == 1
    assert f"{again['ours_img_s']:.1f}" in rows[1]


def test_no_record_writes_nothing(tmp_path):
    out = tmp_path / "gpu.md"
    _module().main(["--small", "--device", "cpu", "--out", str(out), "--no-record"])
    assert not out.exists()

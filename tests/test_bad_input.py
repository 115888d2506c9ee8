"""Bad input: each case stops with one clear message naming the file or the parameter, and
leaves no partial artifact folder behind.

The data stage (``source: voc`` checks an existing tree) reads every image, mask and label, so
it is where broken data is caught; the CAM stage shows that a training stage cleans up too.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from aepsl.methods import cam

from aepsl.methods import erasing
from aepsl.engine.artifacts import REPO_DIR, ArtifactError, read_json, write_bytes, write_json
from aepsl.engine.config import ParameterError, collect, load_profile
from aepsl.data import stage as data_stage
from aepsl.data.voc import write_mask
from aepsl.engine.run_notebooks import run_profile

PROFILE = "bad"


@pytest.fixture
def tree(scene_tree, tmp_path) -> Path:
    """A private copy of the tiny scene tree, free to break."""
    root = tmp_path / "tree"
    shutil.copytree(scene_tree, root)
    return root


def _data_params(tree: Path, art: Path, **kw) -> dict:
    return {"profile": PROFILE, "data_root": str(tree), "artifacts_root": str(art), "source": "voc",
            "device": "cpu", **kw}


def _cam_params(tree: Path, art: Path, **kw) -> dict:
    return {"profile": PROFILE, "data_root": str(tree), "artifacts_root": str(art), "seed": 0, "device": "cpu",
            "backbone": "small", "backbone_weights": "", "width": 4, "epochs": 1, "batch_size": 8, "crop": 32,
            "cam_scales": [1.0], "eval_batch_size": 8, **kw}


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message, f"not one message: {message!r}"
    return message


def _train_name(tree: Path, i: int = 3) -> str:
    return (tree / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[i]


# --------------------------------------------------------------------------- the data
def test_a_good_tree_passes(tree, tmp_path):
    """The control: the same stage on the unbroken copy writes its folder."""
    record = data_stage.run(_data_params(tree, tmp_path / "art"), progress=False)
    assert record["metrics"]["splits"]["train"]["images"] == 24
    assert (tmp_path / "art" / PROFILE / "data" / "metrics.json").is_file()


def test_missing_dataset_root(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data_stage.run(_data_params(tmp_path / "nowhere", tmp_path / "art"), progress=False)
    assert _one_line(err.value).startswith(f"dataset root not found: {tmp_path / 'nowhere'}")
    assert not (tmp_path / "art").exists()
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        cam.run(_cam_params(tmp_path / "nowhere", tmp_path / "art"), progress=False)
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_jpeg(tree, tmp_path, damage):
    path = tree / "JPEGImages" / f"{_train_name(tree)}.jpg"
    data = path.read_bytes()
    write_bytes(path, data[: len(data) // 2] if damage == "truncated" else b"\x00 not a jpeg" * 20)
    with pytest.raises(ValueError) as err:
        data_stage.run(_data_params(tree, tmp_path / "art"), progress=False)
    assert _one_line(err.value).startswith(f"corrupt image file {path}")
    assert not (tmp_path / "art").exists()


def test_corrupt_jpeg_in_a_training_stage(tree, tmp_path):
    path = tree / "JPEGImages" / f"{_train_name(tree)}.jpg"
    write_bytes(path, path.read_bytes()[:200])
    with pytest.raises(ValueError) as err:
        cam.run(_cam_params(tree, tmp_path / "art"), progress=False)
    assert _one_line(err.value).startswith(f"corrupt image file {path}")
    assert not (tmp_path / "art").exists()


def test_mask_of_another_size(tree, tmp_path):
    name = _train_name(tree)
    write_mask(tree / "SegmentationClass" / f"{name}.png", np.zeros((30, 32), np.uint8))
    with pytest.raises(ValueError) as err:
        data_stage.run(_data_params(tree, tmp_path / "art"), progress=False)
    message = _one_line(err.value)
    assert f"{name}.png is 32x30" in message and f"{name}.jpg is 32x32" in message
    assert not (tmp_path / "art").exists()


def test_mask_of_another_size_found_after_training(tree, tmp_path):
    """The CAM stage meets the bad mask only when it scores its CAMs, after training and after
    writing its checkpoint, model and some CAMs: the whole folder goes."""
    name = (tree / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[-1]
    write_mask(tree / "SegmentationClass" / f"{name}.png", np.zeros((30, 32), np.uint8))
    with pytest.raises(ValueError, match=rf"{name}\.png is 32x30"):
        cam.run(_cam_params(tree, tmp_path / "art"), progress=False)
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("label,says", [("hexagon", "names unknown class 'hexagon'"),
                                        (9, "has label 9, outside the foreground classes 1..3")])
def test_label_file_naming_an_unknown_class(tree, tmp_path, label, says):
    labels = read_json(tree / "image_labels.json")
    name = _train_name(tree)
    labels[name] = [1, label]
    write_json(tree / "image_labels.json", labels)
    with pytest.raises(ValueError) as err:
        data_stage.run(_data_params(tree, tmp_path / "art"), progress=False)
    message = _one_line(err.value)
    assert message.startswith(f"{tree / 'image_labels.json'}: image {name!r}") and says in message
    assert not (tmp_path / "art").exists()


def test_labels_by_class_name(tree):
    """Labels may name their classes; the names mean the same as the indices."""
    from aepsl.data.voc import VOCTree

    labels = read_json(tree / "image_labels.json")
    name = _train_name(tree)
    classes = VOCTree(tree).classes
    write_json(tree / "image_labels.json", {**labels, name: [classes[i] for i in labels[name]]})
    by_name = VOCTree(tree).labels(name)
    write_json(tree / "image_labels.json", labels)
    assert by_name.sum() >= 1
    np.testing.assert_array_equal(by_name, VOCTree(tree).labels(name))


def test_through_the_pipeline_one_line_and_no_folder(tree, tmp_path):
    """`python -m aepsl` on a tree with a corrupt JPEG: exit 1, one error line naming the run, its
    notebook and the file, no traceback, and neither a stage folder nor an executed notebook (the
    stage runs, and fails, before its page)."""
    path = tree / "JPEGImages" / f"{_train_name(tree)}.jpg"
    write_bytes(path, path.read_bytes()[:200])
    art = tmp_path / "art"
    profile = tmp_path / "bad.yaml"
    profile.write_text(yaml.safe_dump({"common": {"profile": PROFILE, "seed": 0, "device": "cpu",
                                                  "data_root": str(tree), "artifacts_root": str(art)},
                                       "notebooks": {"00_data": {"source": "voc"}}}))
    result = subprocess.run([sys.executable, "-m", "aepsl", "--profile", str(profile)], cwd=REPO_DIR,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("error: run 00_data (notebooks/00_data.py) failed computing its stage")
    assert "ValueError: corrupt image file" in errors[0] and str(path) in errors[0]
    assert "Traceback" not in result.stderr
    assert not art.exists()   # the stage failed before its page: nothing written


# --------------------------------------------------------------------------- parameters
def _profile_file(tmp_path: Path, notebook: str, entry: dict) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"common": {**load_profile("quick")["common"], "profile": PROFILE,
                                               "artifacts_root": str(tmp_path / "art")},
                                    "notebooks": {notebook: entry}}))
    return path


@pytest.mark.parametrize("notebook,entry,says", [
    ("02_erasing", {"round": -1}, "parameter round must be >= 1"),
    ("02_erasing", {"round": "two"}, "parameter round must be an integer"),
    ("01_cam", {"epochz": 3}, "unknown parameter(s) ['epochz']"),
    ("01_cam", {"epochs": 2.5}, "parameter epochs must be an integer"),
    ("02_erasing", {"runs": [{"round": 1}, {"round": 0}]}, "parameter round must be >= 1"),
])
def test_pipeline_refuses_bad_parameters_before_running_anything(tmp_path, notebook, entry, says):
    with pytest.raises(ParameterError) as err:
        run_profile(str(_profile_file(tmp_path, notebook, entry)))
    message = _one_line(err.value)
    assert message.startswith(f"notebook {notebook}") and says in message   # the notebook (or its run)
    assert not (tmp_path / "art").exists()


def test_cli_bad_parameter_exits_2_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "aepsl", "--profile",
                             str(_profile_file(tmp_path, "02_erasing", {"round": -1}))],
                            cwd=REPO_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: notebook 02_erasing: parameter round must be >= 1, got -1"
    assert "executing" not in result.stdout
    assert not (tmp_path / "art").exists()


def test_papermill_injection_is_checked_in_the_notebook():
    """papermill itself only warns about a name the notebook does not declare; collect() reads
    the injected cell from the kernel's input history and refuses it, or a value of another type."""
    declared = 'profile = "default"\nepochs = 4\nlr = 0.001\n'
    ns = {"In": ["", declared, '# Parameters\nprofile = "quick"\nepochz = 8\n'], "profile": "quick", "epochs": 4}
    with pytest.raises(ParameterError, match=r"papermill parameters: unknown parameter\(s\) \['epochz'\]"):
        collect(ns, cam.CAMConfig)
    ns["In"][2] = '# Parameters\nepochs = "two"\n'
    with pytest.raises(ParameterError, match="parameter epochs must be of type int"):
        collect(ns, cam.CAMConfig)
    ns["In"][2] = "# Parameters\nepochs = 2\nlr = 1\n"   # an int for a float is fine
    ns.update(epochs=2, lr=1)
    assert collect(ns, cam.CAMConfig) == {"profile": "quick", "epochs": 2, "lr": 1}
    assert collect({"In": ["", declared], "epochs": 3}, cam.CAMConfig) == {"epochs": 3}   # not papermill


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook,params,says", [
    ("01_cam", {"epochz": 3}, "unknown parameter(s) ['epochz']"),
    ("02_erasing", {"round": "two"}, "parameter round must be of type int"),
])
def test_papermill_by_hand_refuses_bad_parameters(tmp_path, notebook, params, says):
    import jupytext
    import nbformat
    import papermill

    src = tmp_path / f"{notebook}.ipynb"
    nbformat.write(jupytext.read(REPO_DIR / "notebooks" / f"{notebook}.py"), str(src))
    art = tmp_path / "art"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(src), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   parameters={"artifacts_root": str(art), "data_root": str(tmp_path / "none"),
                                               **params}, progress_bar=False, cwd=str(REPO_DIR))
    assert err.value.ename == "ParameterError"
    assert err.value.evalue.startswith("papermill parameters: ") and says in err.value.evalue
    assert not art.exists()


# --------------------------------------------------------------------------- artifact folders
def test_artifact_folder_of_another_profile_is_refused(tree, tmp_path):
    art = tmp_path / "art"
    data_stage.run(_data_params(tree, art, profile="quick"), progress=False)
    shutil.copytree(art / "quick", art / "default")                 # e.g. copied by hand
    before = (art / "default" / "data" / "metrics.json").read_bytes()
    with pytest.raises(ArtifactError) as err:
        data_stage.run(_data_params(tree, art, profile="default"), progress=False)
    message = _one_line(err.value)
    assert message.startswith(f"{art / 'default' / 'data' / 'metrics.json'} was written by profile 'quick', "
                              "but this run is profile 'default'")
    assert (art / "default" / "data" / "metrics.json").read_bytes() == before   # untouched
    # force=True recomputes it for this profile
    record = data_stage.run(_data_params(tree, art, profile="default", force=True), progress=False)
    assert record["params"]["profile"] == "default"
    assert read_json(art / "default" / "data" / "metrics.json")["profile"] == "default"


def test_upstream_folder_of_another_profile_is_refused(tree, tmp_path):
    """Erasing reads the CAM stage's folder: one of another profile is an error, not an input."""
    art = tmp_path / "art"
    cam.run(_cam_params(tree, art, profile="quick"), progress=False)
    shutil.copytree(art / "quick" / "cam", art / "default" / "cam")
    with pytest.raises(ArtifactError, match=r"cam.metrics\.json was written by profile 'quick'"):
        erasing.run_round({"profile": "default", "data_root": str(tree), "artifacts_root": str(art), "round": 1,
                           "device": "cpu", "eval_batch_size": 8}, progress=False)
    assert not (art / "default" / "erasing").exists()


def test_failed_rerun_of_a_finished_stage_is_not_taken_for_finished(tree, tmp_path):
    """A forced rerun that fails keeps the (pre-existing) folder but not its old metrics.json,
    so the next run recomputes instead of trusting half-rewritten artifacts."""
    art = tmp_path / "art"
    data_stage.run(_data_params(tree, art), progress=False)
    path = tree / "JPEGImages" / f"{_train_name(tree)}.jpg"
    good = path.read_bytes()
    write_bytes(path, good[:200])
    with pytest.raises(ValueError, match="corrupt image file"):
        data_stage.run(_data_params(tree, art, force=True), progress=False)
    assert (art / PROFILE / "data").is_dir()
    assert not (art / PROFILE / "data" / "metrics.json").exists()
    write_bytes(path, good)
    assert data_stage.run(_data_params(tree, art), progress=False)["metrics"]["splits"]["train"]["images"] == 24


# --------------------------------------------------------------------------- a full disk
def test_artifacts_folder_that_cannot_be_created(tree, tmp_path):
    """The artifacts root is a regular file (so no folder can be made there; tests run as root,
    for whom permission bits do not stop writes)."""
    blocker = tmp_path / "art"
    blocker.write_text("not a folder")
    with pytest.raises(OSError) as err:
        data_stage.run(_data_params(tree, blocker), progress=False)
    assert _one_line(err.value).startswith(f"[Errno 20] cannot create folder {blocker / PROFILE / 'data'}")
    assert blocker.read_text() == "not a folder"


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)         # a too-large write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_while_writing_a_checkpoint(tree, tmp_path):
    """A real failing write: the stage runs in a process that may not write files larger than
    64 KiB (RLIMIT_FSIZE), so the OS refuses the training checkpoint halfway through writing it
    (as on a full disk). One message names the file; no folder, no temporary file remains."""
    art = tmp_path / "art"
    code = "import json, sys\nfrom aepsl.methods import cam\ncam.run(json.loads(sys.argv[1]), progress=False)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_DIR), os.environ.get("PYTHONPATH")])),
           "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-c", code, json.dumps(_cam_params(tree, art, width=8))],
                            cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=600,
                            preexec_fn=_limit_file_size(64 * 1024))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    ckpt = art / PROFILE / "cam" / "checkpoint.pt"
    assert last == f"OSError: [Errno 27] cannot write {ckpt}: File too large (disk full?)", result.stderr[-2000:]
    assert not art.exists()

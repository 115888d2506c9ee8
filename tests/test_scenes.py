"""The scene generator, its item sources (Fashion-MNIST lookup, drawn shapes) and the data stage."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aepsl.engine.artifacts import read_json
from aepsl.engine.config import ParameterError
from aepsl.data import sources, stage
from aepsl.data.scenes import SceneConfig, generate
from aepsl.data.sources import (SHAPE_CLASSES, DataSourceError, find_fashion_mnist,
                                load_fashion_mnist, shape_items)

SPLITS = ("train", "val", "test")
OLD = 1_000_000_000  # an mtime (2001) no freshly written file can have


def _names(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _all_names(root: Path) -> list[str]:
    return [n for split in SPLITS for n in _names(root, split)]


def _jpeg(root: Path, name: str) -> np.ndarray:
    with Image.open(root / "JPEGImages" / f"{name}.jpg") as img:
        return np.asarray(img.convert("RGB"))


def _mask(root: Path, name: str) -> np.ndarray:
    with Image.open(root / "SegmentationClass" / f"{name}.png") as img:
        return np.array(img)


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_trees(scene_tree, make_scene_config, tmp_path):
    other = tmp_path / "again"
    generate(make_scene_config(other, seed=0), progress=False)
    names = _all_names(scene_tree)
    assert names == _all_names(other)
    assert len(names) == 24 + 8 + 8
    for name in names:
        a = (scene_tree / "SegmentationClass" / f"{name}.png").read_bytes()
        b = (other / "SegmentationClass" / f"{name}.png").read_bytes()
        assert a == b, f"mask {name} differs between two runs with the same seed"
        np.testing.assert_array_equal(_jpeg(scene_tree, name), _jpeg(other, name))
    assert (json.loads((scene_tree / "image_labels.json").read_text())
            == json.loads((other / "image_labels.json").read_text()))
    assert (scene_tree / "classes.txt").read_text() == (other / "classes.txt").read_text()


def test_different_seed_gives_different_images(scene_tree, make_scene_config, tmp_path):
    other = tmp_path / "seed1"
    generate(make_scene_config(other, seed=1, n_train=4, n_val=0, n_test=0), progress=False)
    names = _names(other, "train")
    assert len(names) == 4
    differ = [not np.array_equal(_jpeg(scene_tree, n), _jpeg(other, n)) for n in names]
    assert all(differ), "a different seed should change every scene"


# --------------------------------------------------------------------------- masks vs labels
def test_masks_match_image_labels(scene_tree):
    labels = json.loads((scene_tree / "image_labels.json").read_text())
    names = _all_names(scene_tree)
    assert set(labels) == set(names)
    n_classes = len((scene_tree / "classes.txt").read_text().split())
    assert n_classes == 4  # background + 3 shapes
    for name in names:
        mask = _mask(scene_tree, name)
        assert mask.shape == (32, 32) and mask.dtype == np.uint8
        values = set(np.unique(mask).tolist()) - {0, 255}
        assert values == set(labels[name]), f"{name}: mask classes {values} != labels {labels[name]}"
        assert 1 <= len(labels[name]) <= 2
        assert all(1 <= c < n_classes for c in labels[name])
        for c in labels[name]:
            assert (mask == c).sum() > 0
        assert _jpeg(scene_tree, name).shape == (32, 32, 3)


def test_dataset_record(scene_tree):
    record = read_json(scene_tree / "dataset.json")
    assert record["counts"] == {"train": 24, "val": 8, "test": 8}
    assert record["params"]["classes"] == ["disc", "square", "triangle"]
    assert "data_root" not in record["params"]


# --------------------------------------------------------------------------- skip / force
def test_generate_skips_same_params_and_regenerates_on_force(make_scene_config, tmp_path):
    cfg = make_scene_config(tmp_path / "t", n_train=3, n_val=1, n_test=1)
    generate(cfg, progress=False)
    files = [tmp_path / "t" / "dataset.json", tmp_path / "t" / "JPEGImages" / "train_000000.jpg",
             tmp_path / "t" / "SegmentationClass" / "val_000000.png"]
    for f in files:
        os.utime(f, (OLD, OLD))
    generate(make_scene_config(tmp_path / "t", n_train=3, n_val=1, n_test=1), progress=False)
    assert [f.stat().st_mtime for f in files] == [OLD] * len(files), "same parameters: nothing rewritten"
    generate(cfg, force=True, progress=False)
    assert all(f.stat().st_mtime != OLD for f in files), "force=True must rewrite the tree"


def test_generate_regenerates_when_params_change(make_scene_config, tmp_path):
    generate(make_scene_config(tmp_path / "t", n_train=3, n_val=1, n_test=1), progress=False)
    record = generate(make_scene_config(tmp_path / "t", n_train=5, n_val=1, n_test=1), progress=False)
    assert record["counts"]["train"] == 5
    assert len(_names(tmp_path / "t", "train")) == 5


# --------------------------------------------------------------------------- validation
def test_validate_unknown_class():
    with pytest.raises(ValueError, match="classes") as exc:
        SceneConfig(source="shapes", classes=["disc", "blob"]).validate()
    assert "blob" in str(exc.value)


def test_validate_fashion_class_for_shapes():
    with pytest.raises(ValueError, match="classes"):
        SceneConfig(source="shapes", classes=["tshirt"]).validate()


def test_validate_max_items_exceeds_classes():
    with pytest.raises(ValueError, match="max_items"):
        SceneConfig(source="shapes", classes=["disc", "square"], max_items=3).validate()


def test_validate_bad_source():
    with pytest.raises(ValueError, match="source"):
        SceneConfig(source="mnist").validate()


def test_validate_item_size_larger_than_image():
    with pytest.raises(ValueError, match="item_size"):
        SceneConfig(source="shapes", classes=["disc"], max_items=1, image_size=32,
                    item_size=[12, 40]).validate()


def test_validate_accepts_tiny_config(make_scene_config, tmp_path):
    make_scene_config(tmp_path).validate()  # no exception


# --------------------------------------------------------------------------- Fashion-MNIST lookup
def _idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def _write_fake_fashion(folder: Path, n_train: int = 5, n_test: int = 3) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {}
    for part, n, img_name, lab_name in (("train", n_train, "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                                        ("test", n_test, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        img_bytes, lab_bytes = _idx_bytes(images), _idx_bytes(labels)
        assert img_bytes[:4] == (0x00000803).to_bytes(4, "big")
        assert lab_bytes[:4] == (0x00000801).to_bytes(4, "big")
        (folder / f"{img_name}.gz").write_bytes(gzip.compress(img_bytes))
        (folder / f"{lab_name}.gz").write_bytes(gzip.compress(lab_bytes))
        data[part] = (images, labels)
    return data


@pytest.fixture
def no_system_fashion(monkeypatch, tmp_path):
    """No environment variable, no Debian package: only what a test passes in is found."""
    monkeypatch.delenv("AEPSL_FASHION_MNIST", raising=False)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", tmp_path / "no-such-debian-dir")
    monkeypatch.chdir(tmp_path)  # the default download_dir is relative to the working directory


def test_fashion_missing_lists_three_ways(no_system_fashion, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataSourceError) as exc:
        find_fashion_mnist(fashion_dir=empty, download_dir=tmp_path / "dl")
    message = str(exc.value)
    for way in ("fashion_dir", "dataset-fashion-mnist", "fashion_download"):
        assert way in message
    assert str(empty) in message  # where it looked


def test_fashion_found_in_folder(no_system_fashion, tmp_path):
    data = _write_fake_fashion(tmp_path / "fm")
    assert find_fashion_mnist(fashion_dir=tmp_path / "fm") == tmp_path / "fm"
    for part in ("train", "test"):
        images, labels = load_fashion_mnist(part, fashion_dir=tmp_path / "fm")
        want_images, want_labels = data[part]
        assert images.shape == (len(want_labels), 28, 28) and images.dtype == np.uint8
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels.astype(np.int64))


def test_fashion_found_through_environment(no_system_fashion, monkeypatch, tmp_path):
    data = _write_fake_fashion(tmp_path / "fm-env", n_train=2, n_test=2)
    monkeypatch.setenv("AEPSL_FASHION_MNIST", str(tmp_path / "fm-env"))
    images, labels = load_fashion_mnist("train")
    np.testing.assert_array_equal(images, data["train"][0])


def test_fashion_bad_part(no_system_fashion, tmp_path):
    _write_fake_fashion(tmp_path / "fm")
    with pytest.raises(ValueError, match="part"):
        load_fashion_mnist("validation", fashion_dir=tmp_path / "fm")


def test_fashion_truncated_file_names_it(no_system_fashion, tmp_path):
    _write_fake_fashion(tmp_path / "fm")
    path = tmp_path / "fm" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))  # header says 5 images, fewer bytes follow
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_fashion_mnist("train", fashion_dir=tmp_path / "fm")


def test_fashion_truncated_gzip_names_it(no_system_fashion, tmp_path):
    _write_fake_fashion(tmp_path / "fm")
    path = tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])  # cut the compressed stream itself
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist("test", fashion_dir=tmp_path / "fm")


def test_fashion_source_without_files_fails_in_generate(no_system_fashion, tmp_path):
    cfg = SceneConfig(data_root=str(tmp_path / "scenes"), source="fashion", classes=["tshirt", "bag"],
                      max_items=2, image_size=32, item_size=[12, 20], part_size=[0, 0], n_train=2, n_val=0, n_test=0)
    with pytest.raises(DataSourceError, match="fashion_dir"):
        generate(cfg, progress=False)
    assert not (tmp_path / "scenes" / "dataset.json").exists()


# --------------------------------------------------------------------------- shapes source
def test_shape_items():
    images, labels = shape_items(n_per_class=3, seed=0)
    k = len(SHAPE_CLASSES)
    assert images.shape == (3 * k, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (3 * k,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=k).tolist() == [3] * k
    assert all(img.max() > 0 for img in images), "every drawn item has visible pixels"
    for c in range(k):
        assert (images[labels == c] > 0).any()
    # deterministic in the seed
    again, _ = shape_items(n_per_class=3, seed=0)
    np.testing.assert_array_equal(images, again)
    other, _ = shape_items(n_per_class=3, seed=1)
    assert not np.array_equal(images, other)


# --------------------------------------------------------------------------- the data stage
def _stage_params(tmp_path: Path, **overrides) -> dict:
    params = {"profile": "t", "seed": 0, "device": "cpu", "data_root": str(tmp_path / "data"),
              "artifacts_root": str(tmp_path / "artifacts"), "source": "shapes",
              "classes": ["disc", "square", "triangle", "cross"], "image_size": 32,
              "n_train": 6, "n_val": 3, "n_test": 2, "min_items": 1, "max_items": 2, "item_size": [12, 20], "part_size": [0, 0]}
    params.update(overrides)
    return params


def test_data_stage_writes_metrics(tmp_path):
    params = _stage_params(tmp_path)
    record = stage.run(params, progress=False)
    path = tmp_path / "artifacts" / "t" / "data" / "metrics.json"
    assert path.is_file()
    saved = read_json(path)
    splits = saved["metrics"]["splits"]
    assert {s: splits[s]["images"] for s in SPLITS} == {"train": 6, "val": 3, "test": 2}
    assert saved["metrics"]["classes"] == ["background", "disc", "square", "triangle", "cross"]
    fractions = splits["train"]["pixel_fraction"]
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(splits["train"]["classes_per_image"].values()) == 6
    assert saved["stage"] == "data" and saved["params_hash"] == record["params_hash"]
    assert (tmp_path / "data" / "JPEGImages" / "train_000005.jpg").is_file()
    # a second call with the same parameters returns the stored record without rewriting it
    os.utime(path, (OLD, OLD))
    again = stage.run(params, progress=False)
    assert path.stat().st_mtime == OLD
    assert again["finished_at"] == saved["finished_at"]


def test_data_stage_unknown_parameter(tmp_path):
    with pytest.raises(ParameterError, match="n_trian"):
        stage.run(_stage_params(tmp_path, n_trian=5), progress=False)
    assert not (tmp_path / "artifacts").exists()


def test_data_stage_wrong_type(tmp_path):
    with pytest.raises(ParameterError, match="n_train"):
        stage.run(_stage_params(tmp_path, n_train="two"), progress=False)
    assert not (tmp_path / "artifacts").exists()


# --------------------------------------------------------------------------- discriminative parts
def test_part_patterns_differ_between_classes_and_are_mirror_symmetric():
    from aepsl.data.scenes import PATTERNS, _pattern

    yy, xx = np.mgrid[-1:1:41j, -1:1:41j]
    disc = xx ** 2 + yy ** 2 <= 1
    drawn = [_pattern(k, xx[disc], yy[disc]) for k in PATTERNS]
    for k, a in enumerate(drawn):
        assert 0.2 < a.mean() < 0.8, f"pattern {k} is almost one colour"
        mirrored = _pattern(k, -xx[disc], yy[disc])
        assert np.array_equal(a, mirrored), f"pattern {k} changes under a left-right flip"
        for j in range(k):
            assert (a != drawn[j]).mean() > 0.2, f"patterns {j} and {k} are nearly the same"


def test_parts_tree_marks_discs_on_objects(make_scene_config, tmp_path):
    root = tmp_path / "parts"
    generate(make_scene_config(root, part_size=[8, 10]), progress=False)
    names = _all_names(root)
    seen_disc = 0
    for name in names:
        with Image.open(root / "SegmentationPart" / f"{name}.png") as img:
            parts = np.array(img)
        mask, image = _mask(root, name), _jpeg(root, name).astype(np.int16)
        obj = (mask > 0) & (mask != 255)
        assert set(np.unique(parts)) <= {0, 1, 2}
        assert np.array_equal(parts > 0, obj), name          # parts split the object pixels exactly
        disc = parts == 1
        seen_disc += int(disc.sum())
        if disc.sum() > 20:   # disc pixels are black or white (JPEG blurs the pattern's edges a little)
            grey = image[disc].mean(axis=1)
            assert ((grey < 80) | (grey > 175)).mean() > 0.6, name
    assert seen_disc > 0
    # without part_size no part folder is written, and the scenes are those of before
    plain = tmp_path / "plain"
    generate(make_scene_config(plain), progress=False)
    assert not (plain / "SegmentationPart").exists()


def test_validate_part_size():
    with pytest.raises(ValueError, match="part_size"):
        SceneConfig(part_size=[4, 8]).validate()          # below 6 px
    with pytest.raises(ValueError, match="part_size"):
        SceneConfig(item_size=[40, 64], part_size=[30, 50]).validate()   # larger than the smallest item
    SceneConfig(part_size=[0, 0]).validate()


def _item_hues(root: Path, classes: list[str]) -> dict[int, list[float]]:
    """Mean hue (0-1) of each labelled item's pixels, per class index (from 0)."""
    import colorsys

    hues: dict[int, list[float]] = {}
    for name in _all_names(root):
        mask, image = _mask(root, name), _jpeg(root, name).astype(np.float64) / 255
        for c in range(1, len(classes) + 1):
            px = image[mask == c]
            if len(px) > 30:
                hues.setdefault(c - 1, []).append(colorsys.rgb_to_hsv(*px.mean(axis=0))[0])
    return hues


def test_class_hue_draws_items_from_their_class_band(make_scene_config, tmp_path):
    root = tmp_path / "hues"
    cfg = make_scene_config(root, part_size=[0, 0], class_hue=0.1)
    generate(cfg, progress=False)
    hues = _item_hues(root, cfg.classes)
    assert sum(len(h) for h in hues.values()) >= 10
    for k, hs in hues.items():
        centre = k / len(cfg.classes)
        for h in hs:   # circular distance to the class's hue: within half the band, plus JPEG slack
            assert min(abs(h - centre), 1 - abs(h - centre)) < 0.05 + 0.03, (k, h)
    # any hue (class_hue 1): some item lies far outside its class's band
    root1 = tmp_path / "any"
    cfg1 = make_scene_config(root1, part_size=[0, 0], class_hue=1.0)
    generate(cfg1, progress=False)
    far = [min(abs(h - k / len(cfg1.classes)), 1 - abs(h - k / len(cfg1.classes)))
           for k, hs in _item_hues(root1, cfg1.classes).items() for h in hs]
    assert max(far) > 0.2


def test_validate_class_hue():
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="class_hue"):
            SceneConfig(class_hue=bad).validate()
    SceneConfig(class_hue=1.0).validate()

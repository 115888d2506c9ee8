"""VOC tree writer -> reader round trip and malformed-input errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aepsl.engine.artifacts import write_bytes, write_json
from aepsl.data.voc import (PALETTE, VOC_CLASSES, SegDataset, VOCTree, write_classes,
                            write_image, write_image_labels, write_mask, write_split)

H, W = 16, 20
CLASSES = ["background", "square", "disc"]


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:H, 0:W]
    image = np.stack([xx * 12, yy * 15, np.full_like(xx, 40 * seed)], -1).astype(np.uint8)
    mask = np.zeros((H, W), dtype=np.uint8)
    return image, mask


def make_tree(root: Path, with_labels_json: bool = True, with_classes: bool = True) -> dict:
    """Four images: a (class 1), b (class 2), c (classes 1+2, with ignore border), d (bg)."""
    masks = {}
    for i, name in enumerate(["a", "b", "c", "d"]):
        image, mask = _scene(i)
        if name in ("a", "c"):
            mask[2:6, 3:9] = 1
        if name in ("b", "c"):
            mask[8:14, 10:18] = 2
        if name == "c":
            mask[0, :] = 255
        write_image(root / "JPEGImages" / f"{name}.jpg", image)
        write_mask(root / "SegmentationClass" / f"{name}.png", mask)
        masks[name] = mask
    write_image(root / "JPEGImages" / "t.jpg", _scene(9)[0])  # test image, no mask
    write_split(root, "train", ["a", "b", "c"])
    write_split(root, "val", ["d"])
    write_split(root, "test", ["t"])
    if with_classes:
        write_classes(root, CLASSES)
    if with_labels_json:
        write_image_labels(root, {"a": [1], "b": [2], "c": [2, 1], "d": [], "t": [1]})
    return masks


def test_palette():
    assert len(PALETTE) == 256 * 3
    assert PALETTE[0:3] == [0, 0, 0]
    assert PALETTE[3:6] == [128, 0, 0]
    assert PALETTE[15 * 3:16 * 3] == [192, 128, 128]  # person
    assert PALETTE[255 * 3:] == [224, 224, 192]
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background"


def test_round_trip(tmp_path):
    masks = make_tree(tmp_path)
    tree = VOCTree(tmp_path)
    assert tree.classes == CLASSES and tree.num_classes == 3
    assert tree.ids("train") == ["a", "b", "c"]
    assert tree.splits() == ["test", "train", "val"]
    img = tree.image("a")
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    # JPEG is lossy, but a smooth image at quality 95 stays close to the original
    assert np.abs(img.astype(int) - _scene(0)[0].astype(int)).mean() < 4
    for name, mask in masks.items():
        got = tree.mask(name)
        assert got.dtype == np.uint8 and got.shape == (H, W)
        np.testing.assert_array_equal(got, mask)
    with Image.open(tmp_path / "SegmentationClass" / "a.png") as pil:
        assert pil.mode == "P"
    np.testing.assert_array_equal(tree.labels("a"), [1, 0])
    np.testing.assert_array_equal(tree.labels("c"), [1, 1])
    np.testing.assert_array_equal(tree.labels("d"), [0, 0])
    assert tree.labels("a").dtype == np.float32
    np.testing.assert_array_equal(tree.labels("t"), [1, 0])  # json covers test images
    assert tree.has_masks("train") and not tree.has_masks("test")

    ds = SegDataset(tree, "train")
    assert len(ds) == 3
    s = ds[2]
    assert s["name"] == "c" and s["image"].shape == (H, W, 3)
    np.testing.assert_array_equal(s["mask"], masks["c"])
    np.testing.assert_array_equal(s["labels"], [1, 1])
    t = SegDataset(tree, "test", with_masks=False)[0]
    assert t["mask"] is None and t["name"] == "t"
    with pytest.raises(FileNotFoundError, match="t.png"):
        SegDataset(tree, "test")


def test_grayscale_mask_and_split_formats(tmp_path):
    make_tree(tmp_path)
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[1:3, 1:3] = 2
    Image.fromarray(mask).save(tmp_path / "SegmentationClass" / "a.png")  # mode "L"
    tree = VOCTree(tmp_path)
    np.testing.assert_array_equal(tree.mask("a"), mask)
    # PSA-style list lines and blank lines
    write_bytes(tmp_path / "ImageSets" / "Segmentation" / "aug.txt",
                b"/JPEGImages/a.jpg /SegmentationClassAug/a.png\n\nb\n")
    assert tree.ids("aug") == ["a", "b"]


def test_labels_derived_from_masks(tmp_path):
    make_tree(tmp_path, with_labels_json=False)
    tree = VOCTree(tmp_path)
    np.testing.assert_array_equal(tree.labels("a"), [1, 0])
    np.testing.assert_array_equal(tree.labels("b"), [0, 1])
    np.testing.assert_array_equal(tree.labels("c"), [1, 1])  # 255 is not a class
    np.testing.assert_array_equal(tree.labels("d"), [0, 0])
    with pytest.raises(FileNotFoundError, match="t.png"):
        tree.labels("t")


def test_labels_from_cls_labels_npy(tmp_path):
    make_tree(tmp_path, with_labels_json=False)
    table = {"a": np.array([0.0, 1.0], dtype=np.float32), "b": np.array([1.0, 1.0])}
    np.save(tmp_path / "cls_labels.npy", table, allow_pickle=True)
    tree = VOCTree(tmp_path)
    np.testing.assert_array_equal(tree.labels("a"), [0, 1])  # from the file, not the mask
    np.testing.assert_array_equal(tree.labels("b"), [1, 1])
    np.testing.assert_array_equal(tree.labels("c"), [1, 1])  # not in file -> from mask


def test_cls_labels_npy_int_keys_and_bad_length(tmp_path):
    root = tmp_path / "VOC2012"
    make_tree(root, with_labels_json=False, with_classes=False)
    vec = np.zeros(20, dtype=np.float32)
    vec[14] = 1  # person
    np.save(root / "cls_labels.npy", {2007000032: vec}, allow_pickle=True)
    tree = VOCTree(root)
    np.testing.assert_array_equal(np.flatnonzero(tree.labels("2007_000032")), [14])
    np.save(root / "cls_labels.npy", {"a": np.zeros(5)}, allow_pickle=True)
    with pytest.raises(ValueError, match=r"cls_labels\.npy.*'a'"):
        VOCTree(root).labels("a")


def test_voc_class_fallback(tmp_path):
    root = tmp_path / "VOC2012"
    make_tree(root, with_classes=False)
    tree = VOCTree(root)
    assert tree.classes == list(VOC_CLASSES) and tree.num_classes == 21
    assert tree.labels("a").shape == (20,)
    # not named like VOC, but has trainval.txt
    other = tmp_path / "plain"
    make_tree(other, with_classes=False)
    write_split(other, "trainval", ["a"])
    assert VOCTree(other).num_classes == 21


# --------------------------------------------------------------------------- malformed input
def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset root not found.*nowhere"):
        VOCTree(tmp_path / "nowhere")


def test_missing_jpeg_dir(tmp_path):
    (tmp_path / "SegmentationClass").mkdir()
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VOCTree(tmp_path)


def test_missing_classes_file(tmp_path):
    make_tree(tmp_path, with_classes=False)
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        VOCTree(tmp_path)


def test_missing_split(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train_aug\.txt.*train, val"):
        VOCTree(tmp_path).ids("train_aug")


def test_missing_image(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"JPEGImages.zz\.jpg"):
        VOCTree(tmp_path).image("zz")


def test_missing_mask(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"SegmentationClass.t\.png"):
        VOCTree(tmp_path).mask("t")


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_jpeg(tmp_path, kind):
    make_tree(tmp_path)
    path = tmp_path / "JPEGImages" / "a.jpg"
    data = path.read_bytes()
    write_bytes(path, b"not a jpeg at all" * 10 if kind == "garbage" else data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"corrupt image file .*a\.jpg"):
        VOCTree(tmp_path).image("a")


def test_corrupt_mask(tmp_path):
    make_tree(tmp_path)
    path = tmp_path / "SegmentationClass" / "a.png"
    write_bytes(path, path.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"corrupt mask file .*a\.png"):
        VOCTree(tmp_path).mask("a")


def test_mask_size_mismatch(tmp_path):
    make_tree(tmp_path)
    write_mask(tmp_path / "SegmentationClass" / "b.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(ValueError, match=r"b\.png.*20x17.*b\.jpg.*20x16"):
        VOCTree(tmp_path).mask("b")


def test_mask_value_out_of_range(tmp_path):
    make_tree(tmp_path)
    bad = np.zeros((H, W), np.uint8)
    bad[3, 3] = 7
    write_mask(tmp_path / "SegmentationClass" / "b.png", bad)
    tree = VOCTree(tmp_path)
    with pytest.raises(ValueError, match=r"b\.png.*value 7"):
        tree.mask("b")


def test_label_unknown_class(tmp_path):
    make_tree(tmp_path)
    write_json(tmp_path / "image_labels.json", {"a": [1], "b": [5]})
    with pytest.raises(ValueError, match=r"image_labels\.json.*'b'.*5"):
        VOCTree(tmp_path).labels("a")
    write_json(tmp_path / "image_labels.json", {"a": [0]})
    with pytest.raises(ValueError, match=r"image_labels\.json.*'a'"):
        VOCTree(tmp_path).labels("a")


def test_writer_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        write_image(tmp_path / "x.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="HxW uint8"):
        write_mask(tmp_path / "x.png", np.zeros((4, 4), np.int32))
    assert not list(tmp_path.iterdir())


def test_rgb_mask_rejected(tmp_path):
    make_tree(tmp_path)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "SegmentationClass" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png.*mode 'RGB'"):
        VOCTree(tmp_path).mask("a")

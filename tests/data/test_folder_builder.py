"""The ``folder`` data set: your own annotated images prepared like the public data sets."""

import json
import shutil

import numpy as np
import pytest
import scipy.io
from folder_layouts import write_cvat_xml, write_folder_csv, write_labelme_json, write_points_csv
from PIL import Image, ImageOps
from raw_layouts import SAMPLE_DIR, write_image, write_shanghaitech_mat

from gcc_jax.data import BadExampleError, build_dataset, make_eval_dataset
from gcc_jax.data._builder_base import natural_key
from gcc_jax.data.build import main as build_main
from gcc_jax.data.folder import hash_split

# ShanghaiTech photos of the sample: split, name in the folder, (sample folder, stem), (height, width).
PHOTOS = (
    ("train", "crowd.jpg", ("part_A/train_data", "IMG_3"), (664, 1000)),
    ("train", "grey.jpg", ("part_A/train_data", "IMG_4"), (746, 1024)),
    ("val", "street.jpg", ("part_B/test_data", "IMG_1"), (768, 1024)),
    ("test", "small.jpg", ("part_A/test_data", "IMG_3"), (427, 640)),
)
FORMATS = ("labelme", "cvat", "csv", "folder_csv", "mat")


def original_heads(sample):
    folder, stem = sample
    mat = scipy.io.loadmat(SAMPLE_DIR / folder / "ground-truth" / f"GT_{stem}.mat")
    return mat["image_info"][0, 0][0, 0]["location"].astype(np.float64)


def annotated_sample_folder(root, fmt):
    """The four sample photos in train/ val/ test/, annotated in ``fmt``; returns their heads."""
    heads, cvat_images, table = {}, [], {}
    for split, name, sample, (height, width) in PHOTOS:
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_DIR / sample[0] / "images" / f"{sample[1]}.jpg", folder / name)
        points = heads[f"{split}/{name}"] = original_heads(sample)
        stem = name.rsplit(".", 1)[0]
        if fmt == "labelme":
            write_labelme_json(folder / f"{stem}.json", name, points, height, width)
        elif fmt == "csv":
            write_points_csv(folder / f"{stem}.csv", points)
        elif fmt == "mat":
            write_shanghaitech_mat(folder / f"GT_{stem}.mat", points)
        cvat_images.append((f"{split}/{name}", height, width, points, []))
        table[f"{split}/{name}"] = points
    if fmt == "cvat":
        write_cvat_xml(root / "annotations.xml", cvat_images)
    elif fmt == "folder_csv":
        write_folder_csv(root / "heads.csv", table)
    return heads


def records(builder, split):
    source = builder.as_data_source(split=split)
    return {source[i]["image/filename"].decode(): source[i] for i in range(len(source))}


def test_sample_photos_in_each_format_build_the_original_heads(tmp_path):
    built = {}
    for fmt in FORMATS:
        heads = annotated_sample_folder(tmp_path / fmt, fmt)
        builder = build_dataset("folder", manual_dir=tmp_path / fmt, data_dir=tmp_path / f"tfds_{fmt}")
        assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"train": 2, "val": 1, "test": 1}
        built[fmt] = {split: records(builder, split) for split in ("train", "val", "test")}
        for split, found in built[fmt].items():
            for name, record in found.items():
                expected = heads[name]
                if fmt == "cvat":  # CVAT writes two decimals
                    expected = np.round(expected, 2)
                np.testing.assert_array_equal(record["points"], expected.astype(np.float32), err_msg=f"{fmt} {name}")
        counts = builder.info.metadata["counts"]
        assert counts["heads"] == {"train": 262 + 413, "val": 23, "test": 297}  # the .mat 'number' fields
        assert counts["images"] == {"train": 2, "val": 1, "test": 1} and counts["skipped"] == 0
    # Identical examples whatever the format: same files, same pixels, same names.
    for fmt in FORMATS[1:]:
        for split in ("train", "val", "test"):
            assert sorted(built[fmt][split]) == sorted(built["labelme"][split])
            for name, record in built[fmt][split].items():
                np.testing.assert_array_equal(record["image"], built["labelme"][split][name]["image"])
    with Image.open(tmp_path / "mat" / "train" / "crowd.jpg") as photo:
        np.testing.assert_array_equal(built["mat"]["train"]["train/crowd.jpg"]["image"], np.asarray(photo.convert("RGB")))


def tiny_folder(root, names, *, heads=2, size=(24, 32)):
    """Tiny images with per-image CSVs, heads at fixed places."""
    for number, name in enumerate(names):
        write_image(root / name, *size, seed=number)
        write_points_csv((root / name).with_suffix(".csv"), [[4.5 + k, 6.5] for k in range(heads)])


def test_hash_splits_stay_put_when_photos_are_added(tmp_path):
    root = tmp_path / "photos"
    first = [f"day1/p{n}.jpg" for n in range(40)]
    tiny_folder(root, first)
    fractions = {"val_fraction": 0.3, "test_fraction": 0.3}
    before = build_dataset("folder", manual_dir=root, data_dir=tmp_path / "tfds", builder_options=fractions)
    before = before.info.metadata["files"]
    assert set(before) == {"train", "val", "test"}
    tiny_folder(root, [f"day2/q{n}.jpg" for n in range(25)])
    after = build_dataset("folder", manual_dir=root, data_dir=tmp_path / "tfds", overwrite=True, builder_options=fractions)
    after = after.info.metadata["files"]
    split_of = {name: split for split, names in after.items() for name in names}
    assert {name: split for split, names in before.items() for name in names} == {n: split_of[n] for n in first}
    assert len(split_of) == 65
    for split, names in after.items():
        assert names == sorted(names, key=natural_key)


def test_hash_split_fractions():
    draws = [hash_split(f"photos/{n}.jpg", val_fraction=0.2, test_fraction=0.1) for n in range(20000)]
    for split, p in (("test", 0.1), ("val", 0.2), ("train", 0.7)):
        # A binomial share: within 5 standard deviations.
        assert abs(draws.count(split) / len(draws) - p) < 5 * np.sqrt(p * (1 - p) / len(draws)), split
    assert hash_split("a.jpg", val_fraction=0, test_fraction=0) == "train"
    assert hash_split("a.jpg", val_fraction=0, test_fraction=1) == "test"


def test_split_folders_decide_and_are_not_mixed_with_fractions(tmp_path):
    root = tmp_path / "photos"
    tiny_folder(root, ["Train/a.jpg", "Train/deep/b.JPEG", "VAL/c.png", "test/d.jpg"])
    builder = build_dataset("folder", manual_dir=root, data_dir=tmp_path / "a")
    assert builder.info.metadata["files"] == {"train": ["Train/a.jpg", "Train/deep/b.JPEG"], "val": ["VAL/c.png"],
                                              "test": ["test/d.jpg"]}  # fmt: skip
    with pytest.raises(ValueError, match="split sub-folders .* drop val_fraction"):
        build_dataset("folder", manual_dir=root, data_dir=tmp_path / "b", builder_options={"val_fraction": 0.2})
    tiny_folder(root, ["loose.jpg"])
    with pytest.raises(ValueError, match=r"1 image\(s\) lie outside them: loose\.jpg"):
        build_dataset("folder", manual_dir=root, data_dir=tmp_path / "c")


def test_image_formats_and_exif_orientation(tmp_path):
    root = tmp_path / "photos"
    pixels = {}
    for name, fmt in (("a.PNG", "PNG"), ("b.webp", "WEBP"), ("c.Bmp", "BMP"), ("d.jpeg", "JPEG")):
        write_image(root / "train" / name, 20, 30, seed=len(pixels), fmt=fmt)
        write_points_csv(root / "train" / f"{name.split('.')[0]}.csv", [[1, 2]])
        with Image.open(root / "train" / name) as image:
            pixels[f"train/{name}"] = np.asarray(image.convert("RGB"))
    # A phone photo stored sideways: EXIF orientation 6 (turn 90° clockwise to view).
    sideways = root / "test" / "phone.jpg"
    write_image(sideways, 20, 30, seed=9)
    with Image.open(sideways) as image:
        exif = image.getexif()
        exif[0x0112] = 6
        image.save(sideways, exif=exif, quality=95)
    # LabelMe shows the photo upright: 20 wide, 30 high.
    write_labelme_json(root / "test" / "phone.json", "phone.jpg", [[3, 25]], 30, 20)
    with Image.open(sideways) as image:
        upright = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    builder = build_dataset("folder", manual_dir=root, data_dir=tmp_path / "tfds")
    for name, record in records(builder, "train").items():
        np.testing.assert_array_equal(record["image"], pixels[name])
    (phone,) = records(builder, "test").values()
    assert upright.shape == (30, 20, 3)
    np.testing.assert_array_equal(phone["image"], upright)
    np.testing.assert_array_equal(phone["points"], [[3, 25]])  # inside the upright image, kept
    # Annotated by a tool that showed it sideways, or on a resized copy: named, not trusted.
    write_labelme_json(root / "test" / "phone.json", "phone.jpg", [[3, 5]], 20, 30)
    with pytest.raises(BadExampleError, match=r"phone\.json: annotates a 30x20 image, but test/phone\.jpg is 20x30 .*turned by 90"):
        build_dataset("folder", manual_dir=root, data_dir=tmp_path / "sideways")
    write_cvat_xml(root / "annotations.xml", [("test/phone.jpg", 15, 10, [[1, 2]], [])])
    (root / "test" / "phone.json").unlink()
    with pytest.raises(BadExampleError, match=r"annotations\.xml: annotates a 10x15 image, but test/phone\.jpg is 20x30"):
        build_dataset("folder", manual_dir=root, data_dir=tmp_path / "resized")


def test_missing_annotations_are_listed_or_taken_as_background(tmp_path):
    root = tmp_path / "photos"
    tiny_folder(root, ["train/a.jpg", "test/b.jpg"])
    write_image(root / "train" / "empty_street.jpg", 24, 32)
    write_image(root / "train" / "sub" / "night.png", 24, 32, fmt="PNG")
    with pytest.raises(ValueError, match=r"2 of 4 images .*: train/empty_street\.jpg, train/sub/night\.png\..*--missing_annotation empty"):
        build_dataset("folder", manual_dir=root, data_dir=tmp_path / "tfds")
    assert not any((tmp_path / "tfds").rglob("*.array_record*"))  # nothing half-written
    builder = build_dataset("folder", manual_dir=root, data_dir=tmp_path / "tfds",
                            builder_options={"missing_annotation": "empty"})  # fmt: skip
    found = records(builder, "train")
    assert found["train/empty_street.jpg"]["points"].shape == (0, 2)
    assert builder.info.metadata["images_without_annotation"] == ["train/empty_street.jpg", "train/sub/night.png"]
    assert builder.info.metadata["counts"]["images_without_annotation"] == 2
    assert builder.info.metadata["counts"]["heads"] == {"train": 2, "test": 2}
    # Built from this folder with these options: a different request is refused, not silently reused.
    with pytest.raises(ValueError, match="prepared otherwise .*missing_annotation: prepared 'empty', asked 'error'.*--overwrite"):
        build_dataset("folder", manual_dir=root, data_dir=tmp_path / "tfds")
    with pytest.raises(ValueError, match="prepared otherwise .*source_folder"):
        build_dataset("folder", manual_dir=root / "train", data_dir=tmp_path / "tfds",
                      builder_options={"missing_annotation": "empty"})  # fmt: skip


def test_bad_images_and_annotations_are_named_or_skipped_and_counted(tmp_path):
    root = tmp_path / "photos"
    tiny_folder(root, ["train/a.jpg", "train/b.jpg", "train/c.jpg", "test/d.jpg"])
    (root / "train" / "b.jpg").write_bytes(b"not a JPEG")
    (root / "train" / "c.csv").write_text("x,y\n1,2\nthree,4\n")
    with pytest.raises(BadExampleError, match=r"train/b\.jpg: cannot decode image.*--on_bad_example skip"):
        build_dataset("folder", manual_dir=root, data_dir=tmp_path / "a")
    (root / "train" / "b.jpg").unlink()
    (root / "train" / "b.csv").unlink()
    with pytest.raises(BadExampleError, match=r"train/c\.csv: line 3 is not 'x,y'"):
        build_dataset("folder", manual_dir=root, data_dir=tmp_path / "b")
    builder = build_dataset("folder", manual_dir=root, data_dir=tmp_path / "c", on_bad_example="skip")
    assert sorted(records(builder, "train")) == ["train/a.jpg"]
    (skipped,) = builder.info.metadata["skipped"]
    assert skipped["file"].endswith("c.csv") and "line 3" in skipped["problem"]
    assert builder.info.metadata["counts"]["skipped"] == 1


def test_points_outside_the_image_follow_the_policy(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "train" / "a.jpg", 24, 32)
    write_labelme_json(root / "train" / "a.json", "a.jpg", [[1, 1], [40, 5], [3, -2]], 24, 32,
                       other_shapes=[{"shape_type": "rectangle", "points": [[0, 0], [5, 5]]}])  # fmt: skip
    with pytest.raises(BadExampleError, match=r"a\.json: 2 of 3 points lie outside the 32x24 image"):
        build_dataset("folder", manual_dir=root, data_dir=tmp_path / "a", out_of_image="raise")
    dropped = build_dataset("folder", manual_dir=root, data_dir=tmp_path / "b")
    np.testing.assert_array_equal(records(dropped, "train")["train/a.jpg"]["points"], [[1, 1]])
    assert dropped.info.metadata["counts"]["points_out_of_image"] == 2
    assert dropped.info.metadata["counts"]["unused_shapes"] == 1 and dropped.info.metadata["unused_shapes"] == {"rectangle": 1}
    clipped = build_dataset("folder", manual_dir=root, data_dir=tmp_path / "c", out_of_image="clip")
    np.testing.assert_array_equal(records(clipped, "train")["train/a.jpg"]["points"], [[1, 1], [32, 5], [3, 0]])


def test_build_command_prints_the_counts_and_the_pipelines_read_the_folder(tmp_path, capsys, loader):
    root = tmp_path / "photos"
    tiny_folder(root, ["train/a.jpg", "train/b.jpg", "val/c.jpg"], heads=3)
    (root / "notes.txt").write_text("taken on Sunday\n")
    args = ["--dataset", "folder", "--manual_dir", str(root), "--data_dir", str(tmp_path / "tfds")]
    assert build_main(args + ["--val_fraction", "0.5"]) == 1  # split folders decide
    assert "error: " in capsys.readouterr().err
    assert build_main(args) == 0
    out = capsys.readouterr().out
    assert "folder: train: 2, val: 1" in out
    counts = json.loads(out.split("folder counts: ", 1)[1].splitlines()[0])
    assert counts["images"] == {"train": 2, "val": 1} and counts["heads"] == {"train": 6, "val": 3}
    assert counts["ignored_files"] == 1
    batches = list(make_eval_dataset("folder", split="val", data_dir=tmp_path / "tfds", batch_size=1, loader=loader))
    assert [float(b["count"][0]) for b in batches] == [3.0]
    with pytest.raises(ValueError, match=r"folder has no split 'test' \(in 'test\[:2\]'\); splits: train, val \(as prepared in"):
        make_eval_dataset("folder", split="test[:2]", data_dir=tmp_path / "tfds", loader=loader)
    with pytest.raises(SystemExit):
        build_main(["--dataset", "ucf_qnrf", "--manual_dir", str(root), "--missing_annotation", "empty"])
    assert "--missing_annotation apply to --dataset folder only" in capsys.readouterr().err

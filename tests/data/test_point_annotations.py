"""Readers of a folder of annotated images: each format as the tools write it, precedence, bad input."""

import shutil

import numpy as np
import pytest
import scipy.io
from folder_layouts import write_cvat_xml, write_folder_csv, write_labelme_json, write_points_csv
from raw_layouts import SAMPLE_DIR, write_ann_mat, write_shanghaitech_mat

from gcc_jax.data import BadExampleError
from gcc_jax.data.point_annotations import (
    find_annotated_images,
    read_annotated_folder,
    read_labelme_json,
    read_points_table,
)

# The real ShanghaiTech photos and their heads, (folder, stem) -> file.
SAMPLE_PHOTOS = {
    "a_train_3": ("part_A/train_data", "IMG_3"),
    "a_train_4": ("part_A/train_data", "IMG_4"),
    "a_test_3": ("part_A/test_data", "IMG_3"),
    "b_test_1": ("part_B/test_data", "IMG_1"),
}
SIZES = {"a_train_3": (664, 1000), "a_train_4": (746, 1024), "a_test_3": (427, 640), "b_test_1": (768, 1024)}


def sample_heads(name):
    folder, stem = SAMPLE_PHOTOS[name]
    mat = scipy.io.loadmat(SAMPLE_DIR / folder / "ground-truth" / f"GT_{stem}.mat")
    return mat["image_info"][0, 0][0, 0]["location"].astype(np.float64)


def copy_photo(name, target):
    folder, stem = SAMPLE_PHOTOS[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE_DIR / folder / "images" / f"{stem}.jpg", target)


def test_each_format_reads_the_heads_of_the_original_annotation(tmp_path):
    """One ShanghaiTech photo per format; every format gives the .mat's heads (CVAT's two decimals aside)."""
    root = tmp_path / "photos"
    heads = {name: sample_heads(name) for name in SAMPLE_PHOTOS}
    copy_photo("a_train_3", root / "labelme" / "crowd.jpg")
    write_labelme_json(root / "labelme" / "crowd.json", "crowd.jpg", heads["a_train_3"], *SIZES["a_train_3"],
                       other_shapes=[{"shape_type": "rectangle", "points": [[1, 2], [30, 40]]}])  # fmt: skip
    copy_photo("a_train_4", root / "cvat" / "images" / "grey.jpg")
    write_cvat_xml(root / "cvat" / "annotations.xml", [("grey.jpg", *SIZES["a_train_4"], heads["a_train_4"], [(1, 2, 3, 4)])])
    copy_photo("a_test_3", root / "csv" / "Small.JPG")
    write_points_csv(root / "csv" / "Small.txt", heads["a_test_3"], header=False, separator=" ")
    copy_photo("b_test_1", root / "mat" / "images" / "street.jpg")
    write_shanghaitech_mat(root / "mat" / "ground-truth" / "GT_street.mat", heads["b_test_1"])

    found = {image.relative_path: image for image in read_annotated_folder(root)}
    assert sorted(found) == ["csv/Small.JPG", "cvat/images/grey.jpg", "labelme/crowd.jpg", "mat/images/street.jpg"]
    labelme = found["labelme/crowd.jpg"]
    assert labelme.annotation_format == "labelme" and labelme.unused_shapes == {"rectangle": 1}
    assert labelme.annotated_hw == SIZES["a_train_3"]
    np.testing.assert_array_equal(labelme.points, heads["a_train_3"].astype(np.float32))
    cvat = found["cvat/images/grey.jpg"]
    assert cvat.annotation_format == "cvat" and cvat.unused_shapes == {"box": 1}
    assert cvat.annotated_hw == SIZES["a_train_4"]
    assert found["csv/Small.JPG"].annotated_hw is None  # a CSV does not say
    np.testing.assert_array_equal(cvat.points, np.round(heads["a_train_4"], 2).astype(np.float32))
    assert np.abs(cvat.points - heads["a_train_4"]).max() <= 0.005 + 1e-3  # two decimals, in float32
    assert found["csv/Small.JPG"].annotation_format == "csv"
    np.testing.assert_array_equal(found["csv/Small.JPG"].points, heads["a_test_3"].astype(np.float32))
    assert found["mat/images/street.jpg"].annotation_format == "mat"
    np.testing.assert_array_equal(found["mat/images/street.jpg"].points, heads["b_test_1"].astype(np.float32))
    assert len(found["mat/images/street.jpg"].points) == 23  # 'number' of the real file


def test_folder_csv_and_qnrf_mat(tmp_path):
    root = tmp_path / "photos"
    heads = sample_heads("a_test_3")
    copy_photo("a_test_3", root / "day1" / "a.jpg")
    copy_photo("a_test_3", root / "day1" / "empty.jpg")
    copy_photo("a_test_3", root / "qnrf.png")  # a JPEG named .png is still read by content later
    write_folder_csv(root / "heads.csv", {"day1/a.jpg": heads, "empty.jpg": []})
    write_ann_mat(root / "qnrf_ann.mat", heads[:5])
    found = {image.relative_path: image for image in read_annotated_folder(root)}
    assert found["day1/a.jpg"].annotation_format == "folder_csv"
    np.testing.assert_array_equal(found["day1/a.jpg"].points, heads.astype(np.float32))
    # A bare file name finds the one image of that name below the CSV's folder.
    assert found["day1/empty.jpg"].annotation_format == "folder_csv" and found["day1/empty.jpg"].points.shape == (0, 2)
    assert found["qnrf.png"].annotation_format == "mat"
    np.testing.assert_array_equal(found["qnrf.png"].points, heads[:5].astype(np.float32))


def test_precedence_and_what_is_ignored(tmp_path, caplog):
    root = tmp_path / "photos"
    copy_photo("a_test_3", root / "x.jpg")
    write_labelme_json(root / "x.json", "x.jpg", [[1, 2]], 427, 640)
    write_points_csv(root / "x.csv", [[3, 4], [5, 6]])
    write_cvat_xml(root / "annotations.xml", [("x.jpg", 427, 640, [[7, 8]], [])])
    write_shanghaitech_mat(root / "GT_x.mat", [[9, 10]])
    (root / "README.txt").write_text("my photos\n")
    (root / ".DS_Store").write_bytes(b"\0")
    scan = find_annotated_images(root)
    (image,) = scan.images
    assert image.annotation_format == "labelme" and image.annotation_path == root / "x.json"
    assert [kind for kind, _ in image.overridden] == ["cvat", "csv", "mat"]
    np.testing.assert_array_equal(image.read().points, [[1, 2]])
    assert "annotated in several formats; using labelme" in caplog.text
    assert scan.ignored_files == (".DS_Store", "README.txt")


def test_missing_annotation_is_refused_with_the_list_or_taken_as_no_heads(tmp_path):
    root = tmp_path / "photos"
    copy_photo("a_test_3", root / "sub" / "beach.webp.jpg")
    copy_photo("a_test_3", root / "annotated.jpg")
    write_points_csv(root / "annotated.csv", [[1, 2]])
    with pytest.raises(ValueError, match=r"1 of 2 images .* no annotation: sub/beach\.webp\.jpg\. .*--missing_annotation empty"):
        find_annotated_images(root)
    found = {image.relative_path: image for image in read_annotated_folder(root, missing_annotation="empty")}
    assert found["sub/beach.webp.jpg"].annotation_format == "none" and found["sub/beach.webp.jpg"].points.shape == (0, 2)


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("x.json", "{not json", "cannot read the LabelMe JSON"),
        ("x.json", '{"version": "5.5.0"}', "no 'shapes' list"),
        ("x.json", '{"shapes": [{"label": "h", "points": [[1, 2], [3, 4]], "shape_type": "point"}]}', "point with 2 points"),
        ("x.json", '{"shapes": [{"label": "h", "points": [["a", 2]], "shape_type": "point"}]}', "not numeric"),
        ("x.csv", "x,y\n1,2\n3\n", "line 3 is not 'x,y'"),
        ("x.txt", "1 2\nnan 4\n", "NaN or inf"),
        ("x.mat", "not a mat file", "cannot read the .mat file"),
    ],
)
def test_a_malformed_annotation_names_the_file(tmp_path, name, content, problem):
    copy_photo("a_test_3", tmp_path / "x.jpg")
    (tmp_path / name).write_text(content)
    (image,) = find_annotated_images(tmp_path).images
    with pytest.raises(BadExampleError, match=problem) as error:
        image.read()
    assert error.value.path == str(tmp_path / name)


def test_folder_wide_files_name_their_problem(tmp_path):
    copy_photo("a_test_3", tmp_path / "x.jpg")
    copy_photo("a_test_3", tmp_path / "y.jpg")
    (tmp_path / "heads.csv").write_text("image,x,y\nx.jpg,1,2\ny.jpg,one,2\nghost.jpg,3,4\n")
    scan = find_annotated_images(tmp_path)
    assert scan.unmatched == (("heads.csv", "ghost.jpg"),)
    images = {image.relative_path: image for image in scan.images}
    np.testing.assert_array_equal(images["x.jpg"].read().points, [[1, 2]])
    with pytest.raises(BadExampleError, match=r"heads\.csv: line 3 \(y\.jpg\): x, y = 'one', '2' are not numbers"):
        images["y.jpg"].read()
    (tmp_path / "heads.csv").unlink()
    (tmp_path / "annotations.xml").write_text("<annotations><image id='0' name='x.jpg'><points points='1,2;3'/></image>")
    with pytest.raises(BadExampleError, match=r"annotations\.xml: cannot read the CVAT XML"):
        find_annotated_images(tmp_path)
    (tmp_path / "annotations.xml").write_text("<annotations><image id='0' name='x.jpg'><points points='1,2;3'/></image></annotations>")
    with pytest.raises(BadExampleError, match=r"annotations\.xml: image 'x\.jpg': points '3' is not 'x,y'"):
        find_annotated_images(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        find_annotated_images(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="holds no image"):
        find_annotated_images(tmp_path)
    copy_photo("a_test_3", tmp_path / "p.jpg")
    copy_photo("a_test_3", tmp_path / "p.png")
    with pytest.raises(ValueError, match=r"share a name up to the extension.*p\.jpg, p\.png"):
        find_annotated_images(tmp_path)
    with pytest.raises(ValueError, match="missing_annotation must be one of"):
        find_annotated_images(tmp_path, missing_annotation="skip")


def test_point_tables_with_headers_and_separators(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id;y;x\n1;20.5;10.25\n\n2;40;30\n")
    np.testing.assert_array_equal(read_points_table(path), [[10.25, 20.5], [30, 40]])
    path.write_text("")
    assert read_points_table(path).shape == (0, 2)
    path.write_text("\ufeffx,y\n1,2\n")  # a BOM, as spreadsheet programs write it
    np.testing.assert_array_equal(read_points_table(path), [[1, 2]])


def test_labelme_3_shapes_without_shape_type(tmp_path):
    path = tmp_path / "old.json"
    path.write_text('{"shapes": [{"label": "h", "points": [[1, 2]]}, {"label": "p", "points": [[1, 2], [3, 4], [5, 6]]}]}')
    points, unused = read_labelme_json(path)
    np.testing.assert_array_equal(points, [[1, 2]])
    assert unused == {"polygon": 1}

"""README "Your own images": its commands, run as written on a small folder annotated with LabelMe.

The build command runs in the default suite; the whole chain (an earlier run, fine-tuning from
its workdir with ``configs/folder.py:runlocal``, evaluation, prediction) is ``slow``: about
7 minutes of start-up and compilation on 2 busy cores.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "tests" / "data" / "shanghaitech_sample"
# (split folder, photo name, sample folder, sample stem, (height, width)).
PHOTOS = (
    ("train", "crowd.jpg", "part_A/train_data", "IMG_3", (664, 1000)),
    ("train", "grey.jpg", "part_A/train_data", "IMG_4", (746, 1024)),
    ("val", "street.jpg", "part_B/test_data", "IMG_1", (768, 1024)),
    ("test", "small.jpg", "part_A/test_data", "IMG_3", (427, 640)),
)


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Your own images\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def annotate_with_labelme(folder: pathlib.Path) -> dict[str, int]:
    """The sample photos in train/ val/ test/, each with the JSON LabelMe 5 saves for its heads."""
    heads = {}
    for split, name, sample, stem, (height, width) in PHOTOS:
        (folder / split).mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_DIR / sample / "images" / f"{stem}.jpg", folder / split / name)
        points = scipy.io.loadmat(SAMPLE_DIR / sample / "ground-truth" / f"GT_{stem}.mat")["image_info"][0, 0][0, 0]["location"]
        shapes = [{"label": "head", "points": [[float(x), float(y)]], "group_id": None, "description": "",
                   "shape_type": "point", "flags": {}, "mask": None} for x, y in np.asarray(points, np.float64)]  # fmt: skip
        document = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": name, "imageData": None,
                    "imageHeight": height, "imageWidth": width}  # fmt: skip
        (folder / split / name).with_suffix(".json").write_text(json.dumps(document, indent=2))
        heads[split] = heads.get(split, 0) + len(shapes)
    return heads


def test_the_section_names_the_annotation_tool_then_runs_python_commands():
    commands = readme_commands()
    assert commands[0] == "pip install labelme && labelme my_photos --labels head --nodata --autosave"
    assert [command.split()[:3] for command in commands[1:]] == [
        ["python", "-m", "gcc_jax.data.build"], ["python", "train.py", "--config"],
        ["python", "-m", "gcc_jax.evaluate"], ["python", "-m", "gcc_jax.predict"],
    ]  # fmt: skip


def test_the_build_command_builds_a_labelme_folder(tmp_path, monkeypatch, capsys):
    from gcc_jax.data.build import main as build_main

    heads = annotate_with_labelme(tmp_path / "my_photos")
    monkeypatch.chdir(tmp_path)
    build = readme_commands()[1]
    assert build_main(shlex.split(build)[3:]) == 0
    counts = json.loads(capsys.readouterr().out.split("folder counts: ", 1)[1].splitlines()[0])
    assert counts["heads"] == heads == {"train": 262 + 413, "val": 23, "test": 297}


def _run(command: str, cwd: pathlib.Path) -> str:
    """A README command, with ``python`` this interpreter and the repository's files by path."""
    args = shlex.split(command)
    args = [sys.executable] + [
        str(ROOT / arg) if arg == "train.py" else arg.replace("configs/folder.py", f"{ROOT}/configs/folder.py:runlocal")
        for arg in args[1:]
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


@pytest.mark.slow
def test_the_commands_run_as_written(tmp_path):
    annotate_with_labelme(tmp_path / "my_photos")
    (tmp_path / "new_photos").mkdir()
    shutil.copy(SAMPLE_DIR / "part_B/train_data/images/IMG_3.jpg", tmp_path / "new_photos" / "street.jpg")
    # The earlier run whose workdir the README fine-tunes from (same width as :runlocal).
    _run(f"python train.py --config {ROOT}/configs/synthetic.py:runlocal --workdir runs/sha", tmp_path)
    build, train, evaluate, predict = readme_commands()[1:]
    _run(build, tmp_path)
    log = _run(train, tmp_path)
    assert "initialising from the best checkpoint of runs/sha" in log
    saved = json.loads((tmp_path / "runs/mine/config.json").read_text())
    assert saved["dataset"]["name"] == "folder" and saved["model"]["init_checkpoint"] == "runs/sha"
    _run(evaluate, tmp_path)
    result = json.loads((tmp_path / "runs/mine/eval_test_best.json").read_text())
    assert result["num_images"] == 1
    _run(predict, tmp_path)
    assert (tmp_path / "predictions" / "street_points.csv").is_file()
    assert "street" in (tmp_path / "predictions" / "summary.csv").read_text()

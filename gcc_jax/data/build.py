"""Building (preparing) the TFDS data sets from their manual download directories.

The one documented step before training on a real data set::

    python -m gcc_jax.data.build --dataset shanghaitech/part_a \\
        --manual_dir ~/data/ShanghaiTech --data_dir ~/tensorflow_datasets

reads the raw archive layout (see each builder's module) from ``--manual_dir`` and writes the prepared
``array_record`` files to ``--data_dir`` (TFDS's default ``~/tensorflow_datasets`` when
omitted). ``make_train_dataset`` / ``make_eval_dataset`` call :func:`load_builder`, which builds
lazily on first use when given ``manual_dir``. Options ``--on_bad_example skip`` and
``--out_of_image {drop,raise,clip,keep}`` set the bad-input policy (see
:class:`gcc_jax.data._builder_base.CrowdBuilder`). ``--dataset folder`` prepares a folder of
your own annotated images (:mod:`gcc_jax.data.folder`) and takes three more options:
``--missing_annotation``, ``--val_fraction`` and ``--test_fraction``.

ArrayRecord files are read by index (``tfds.data_source(name, data_dir=...)``,
``builder.as_data_source()``), which the project's pipelines need for a global shuffle and
per-process shards; TFDS cannot stream them as a ``tf.data.Dataset`` (``tfds.load`` and
``builder.as_dataset`` raise ``NotImplementedError``). ``--file_format tfrecord`` writes a
copy for ``tfds.load(name, data_dir=..., builder_kwargs={"file_format": "tfrecord"})``
instead; keep it in a data directory of its own: the pipelines cannot read it
(:func:`load_builder` refuses it, naming the directory), and a data set is built in one file
format per data directory (:func:`build_dataset` refuses the other one there).

A data set already prepared is kept as it is; after changing the raw files, ``--overwrite``
prepares it again from them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import pathlib
import shutil
import tempfile
import time

import tensorflow_datasets as tfds

from gcc_jax import cli

# Importing the builder modules registers them with TFDS.
from gcc_jax.data import folder, jhu_crowd, nwpu_crowd, shanghaitech, ucf_qnrf  # noqa: F401
from gcc_jax.data._builder_base import BAD_EXAMPLE_POLICIES, OUT_OF_IMAGE_POLICIES, BadExampleError
from gcc_jax.data.catalog import DATASETS, get_spec
from gcc_jax.data.point_annotations import MISSING_ANNOTATION_POLICIES

__all__ = ["FILE_FORMATS", "build_dataset", "load_builder", "main"]

# ArrayRecord (random access: the pipelines and tfds.data_source) or TFRecord (tfds.load).
FILE_FORMATS = ("array_record", "tfrecord")

_log = logging.getLogger(__name__)


def _prepared_format(name: str, data_dir) -> tuple[tfds.core.DatasetBuilder, set[str]]:
    """The builder of ``name`` as prepared in ``data_dir`` and the file formats found there
    (empty when it is not prepared).

    ``file_format=None`` takes the format from the prepared ``dataset_info.json`` instead of
    asking for ArrayRecord, which TFDS refuses with its own error when the files are another
    format.
    """
    # While it looks for a prepared version TFDS warns "Variant folder ... has no
    # dataset_info.json" about the folders of a data set not prepared yet: a question, not a fault.
    with _without_variant_folder_warnings():
        builder = tfds.builder(_tfds_name(name), data_dir=data_dir, file_format=None)
        prepared = builder.is_prepared()
    if not prepared:
        return builder, set()
    return builder, {file_format.value for file_format in builder.info.available_file_formats()}


@contextlib.contextmanager
def _without_variant_folder_warnings():
    """Drops TFDS's "Variant folder ..." warnings (logged through absl) inside the block."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Variant folder")

    logger = logging.getLogger("absl")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _tfds_name(name: str) -> str:
    spec = get_spec(name)
    if spec.tfds_name is None:
        raise ValueError(f"{name!r} is generated on the fly and needs no build step")
    return spec.tfds_name


def build_dataset(
    name: str,
    *,
    manual_dir,
    data_dir=None,
    on_bad_example: str = "raise",
    out_of_image: str = "drop",
    file_format: str = "array_record",
    overwrite: bool = False,
    builder_options: dict | None = None,
) -> tfds.core.DatasetBuilder:
    """Prepares one data set from its raw files (a no-op if already prepared, unless ``overwrite``).

    Args:
      name: a real data set name (``"shanghaitech/part_a"``, ``"ucf_qnrf"``…).
      manual_dir: the folder the archive was unpacked into (see the builder's
        ``MANUAL_DOWNLOAD_INSTRUCTIONS``).
      data_dir: where TFDS keeps prepared data (``None`` = TFDS's default).
      on_bad_example: ``"raise"`` or ``"skip"``.
      out_of_image: ``"drop"``, ``"raise"``, ``"clip"`` or ``"keep"``.
      file_format: ``"array_record"`` (what the pipelines read) or ``"tfrecord"`` (for
        ``tfds.load``; see the module docstring).
      overwrite: prepare it again from the raw files even if it is already prepared (after
        the raw files changed). The new copy is built beside the old one, which is replaced
        only once the new one is complete.
      builder_options: further keyword arguments of the builder: ``folder`` takes
        ``missing_annotation``, ``val_fraction`` and ``test_fraction``
        (:class:`gcc_jax.data.folder.CrowdFolder`).

    Returns:
      The prepared ``tfds`` builder (``builder.info.metadata`` lists what was skipped,
      dropped or ignored).

    Raises:
      ValueError: ``manual_dir`` is missing or empty, or an option is invalid; a ``folder`` data
        set prepared from another folder or with other options is in ``data_dir`` (the message
        says to add ``overwrite``).
      BadExampleError: an example cannot be read and ``on_bad_example="raise"``; the message
        names the file and says how to leave such examples out.
    """
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}")
    prepared, found = _prepared_format(name, data_dir)
    if found and file_format not in found:
        raise ValueError(
            f"{name} is already prepared in {prepared.data_dir_root} as {' and '.join(sorted(found))} files; a data "
            f"set is built in one file format per data dir: build the {file_format} copy into another data dir "
            f"(or delete {prepared.data_dir} to replace it)"
        )
    options = {"on_bad_example": on_bad_example, "out_of_image": out_of_image, "file_format": file_format,
               **(builder_options or {})}  # fmt: skip
    builder = tfds.builder(_tfds_name(name), data_dir=data_dir, **options)
    if builder.is_prepared() and not overwrite:
        _check_same_build(name, builder, manual_dir)
        _log.info("%s is already prepared in %s (overwrite rebuilds it from the raw files)", name, builder.data_dir)
        return builder
    manual = pathlib.Path(manual_dir)
    if not manual.is_dir() or not any(manual.iterdir()):
        raise ValueError(
            f"manual_dir {manual} does not exist or is empty; {name} is built from the raw files:\n"
            f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    start = time.perf_counter()
    if builder.is_prepared():
        _rebuild(name, manual, builder, options)
        builder = tfds.builder(_tfds_name(name), data_dir=data_dir, **options)
    else:
        _prepare(builder, manual, on_bad_example=on_bad_example, file_format=file_format)
    _log.info("Built %s in %.1f s into %s", name, time.perf_counter() - start, builder.data_dir)
    return builder


def _check_same_build(name: str, builder: tfds.core.DatasetBuilder, manual_dir) -> None:
    """Refuses to reuse a prepared copy built from another folder or with other options (for
    builders that record them, e.g. ``folder``), instead of silently training on it."""
    if not hasattr(builder, "build_options") or manual_dir is None:
        return
    recorded = (builder.info.metadata or {}).get("build_options")
    wanted = builder.build_options(manual_dir)
    if recorded is not None and recorded != wanted:
        differ = ", ".join(f"{key}: prepared {recorded.get(key)!r}, asked {value!r}" for key, value in wanted.items()
                           if recorded.get(key) != value)  # fmt: skip
        raise ValueError(
            f"{name} in {builder.data_dir_root} was prepared otherwise ({differ}); add --overwrite "
            f"(overwrite=True) to prepare it again, or give another --data_dir"
        )


def _prepare(builder: tfds.core.DatasetBuilder, manual: pathlib.Path, *, on_bad_example: str, file_format: str) -> None:
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)),
            file_format=file_format,
        )
    except BadExampleError as error:
        if on_bad_example != "raise":
            raise
        raise BadExampleError(
            error.path,
            f"{error.problem}. To build without such examples (each one logged and listed in "
            f"the data set's metadata), add --on_bad_example skip (on_bad_example='skip')",
        ) from error


def _rebuild(name: str, manual: pathlib.Path, builder: tfds.core.DatasetBuilder, options: dict) -> None:
    """Prepares ``name`` beside the prepared copy and swaps it in only once it is complete.

    A build that fails (a bad example, an interrupt) leaves the old prepared data in place.
    """
    target = pathlib.Path(builder.data_dir)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".rebuild-", dir=builder.data_dir_root))
    try:
        fresh = tfds.builder(_tfds_name(name), data_dir=staging, **options)
        _prepare(fresh, manual, on_bad_example=options["on_bad_example"], file_format=options["file_format"])
        retired = target.with_name(f".{target.name}.replaced")
        shutil.rmtree(retired, ignore_errors=True)
        target.rename(retired)
        pathlib.Path(fresh.data_dir).rename(target)
        shutil.rmtree(retired)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_builder(name: str, *, data_dir=None, manual_dir=None, allow_build: bool = True) -> tfds.core.DatasetBuilder:
    """The prepared builder of ``name``, building it first if needed and allowed.

    Args:
      name: a real data set name.
      data_dir: TFDS data directory (``None`` = TFDS's default).
      manual_dir: raw files, needed only if the data set is not prepared yet.
      allow_build: ``False`` refuses to build (e.g. in multi-process runs, where all
        processes would race to write the same files).

    Raises:
      ValueError: not prepared and it cannot be built here (the message says how to build), or
        prepared without ArrayRecord files (``--file_format tfrecord``), which the pipelines
        cannot read by index.
    """
    builder, found = _prepared_format(name, data_dir)
    if found and "array_record" not in found:
        raise ValueError(
            f"{name} in {builder.data_dir_root} is prepared as {' and '.join(sorted(found))} files, which the "
            f"pipelines cannot read (they read ArrayRecord by index): build it without --file_format tfrecord "
            f"into another data dir (python -m gcc_jax.data.build --dataset {name} --manual_dir <raw files> "
            f"--data_dir <another dir>) and pass that one; the tfrecord copy stays for tfds.load"
        )
    if found:
        return builder
    command = f"python -m gcc_jax.data.build --dataset {name} --manual_dir <raw files> --data_dir {builder.data_dir_root}"
    if manual_dir is None:
        raise ValueError(
            f"{name} is not prepared in {builder.data_dir_root}; pass manual_dir=<folder with the raw "
            f"files> to build it on first use, or run:\n  {command}\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    if not allow_build:
        raise ValueError(f"{name} is not prepared in {builder.data_dir_root}; build it once before a multi-process run:\n  {command}")
    return build_dataset(name, manual_dir=manual_dir, data_dir=data_dir)


def main(argv=None) -> int:
    """Command line: ``python -m gcc_jax.data.build --dataset NAME --manual_dir DIR [--data_dir DIR]``."""
    real = [name for name, spec in DATASETS.items() if spec.tfds_name is not None]
    parser = argparse.ArgumentParser(
        prog="python -m gcc_jax.data.build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, action="append", choices=real, help="repeat to build several")
    parser.add_argument("--manual_dir", required=True, help="folder holding the unpacked raw archive")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory (default: ~/tensorflow_datasets)")
    parser.add_argument(
        "--on_bad_example",
        default="raise",
        choices=BAD_EXAMPLE_POLICIES,
        help="an unreadable image or annotation: 'raise' stops the build naming the file (default); "
        "'skip' leaves that example out, logs it and lists it in the data set's metadata",
    )
    parser.add_argument(
        "--out_of_image",
        default="drop",
        choices=OUT_OF_IMAGE_POLICIES,
        help="annotated points outside the image: 'drop' them (default, as the references' preprocessing), "
        "'raise' (a bad example), 'clip' onto the border, or 'keep'",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="prepare the data set again from the raw files even if it is already prepared (after fixing them)",
    )
    parser.add_argument(
        "--file_format", default="array_record", choices=FILE_FORMATS,
        help="array_record (read by the training / evaluation pipelines and tfds.data_source) or "
        "tfrecord (for tfds.load, in a data_dir of its own)",
    )  # fmt: skip
    folder_options = parser.add_argument_group("--dataset folder (your own images: see gcc_jax.data.folder)")
    folder_options.add_argument(
        "--missing_annotation", choices=MISSING_ANNOTATION_POLICIES, default=None,
        help="images without any annotation file: 'error' stops the build listing them (default); "
        "'empty' takes them as images with no heads (background photos)",
    )  # fmt: skip
    for split in ("val", "test"):
        folder_options.add_argument(
            f"--{split}_fraction", type=float, default=None,
            help=f"share of the images hashed (by relative path) into {split} when the folder has no "
            "train/ val/ test/ sub-folders (default 0.1)",
        )  # fmt: skip
    cli.add_debug_argument(parser)
    args = parser.parse_args(argv)
    given = {key: getattr(args, key) for key in ("missing_annotation", "val_fraction", "test_fraction")}
    given = {key: value for key, value in given.items() if value is not None}
    if given and args.dataset != ["folder"]:
        parser.error(f"{', '.join('--' + key for key in given)} apply to --dataset folder only")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def work():
        for name in args.dataset:
            start = time.perf_counter()
            builder = build_dataset(
                name,
                manual_dir=args.manual_dir,
                data_dir=args.data_dir,
                on_bad_example=args.on_bad_example,
                out_of_image=args.out_of_image,
                file_format=args.file_format,
                overwrite=args.overwrite,
                builder_options=given or None,
            )
            splits = ", ".join(f"{split}: {info.num_examples}" for split, info in builder.info.splits.items())
            metadata = builder.info.metadata or {}
            report = {key: len(metadata.get(key, [])) for key in ("skipped", "out_of_image", "ignored_files", "warnings")}
            print(f"{name}: {splits} in {time.perf_counter() - start:.1f} s -> {builder.data_dir}; {report}")
            if "counts" in metadata:
                print(f"{name} counts: {json.dumps(metadata['counts'])}")

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())

"""Writes synthetic crowd examples to PNG, to see what the ``synthetic_crowd`` set looks like.

    python -m gcc_jax.data.render_synthetic --out /tmp/synthetic --num 8 [--split train]
        [--seed 0] [--option height=384 --option max_people=300]

For each example ``i`` it writes ``<split>_<i>.png`` (the image) and ``<split>_<i>_points.png``
(the same image with each annotated head centre marked by a red cross), and prints the head
counts.
"""

from __future__ import annotations

import argparse
import ast
import pathlib

from PIL import Image, ImageDraw

from gcc_jax.data.synthetic import SPLITS, SyntheticCrowdOptions, generate_example

__all__ = ["main", "render_examples"]


def render_examples(out_dir, *, num: int, split: str = "train", options=None) -> list[pathlib.Path]:
    """Renders the first ``num`` examples of ``split`` to PNG files in ``out_dir``.

    Args:
      out_dir: output folder (created).
      num: number of examples.
      split: ``"train"``, ``"val"`` or ``"test"``.
      options: :class:`SyntheticCrowdOptions`, a dict of its fields, or ``None``.

    Returns:
      The written paths, two per example (image, image with points).
    """
    options = SyntheticCrowdOptions.from_value(options)
    num = min(num, options.num_examples(split))
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(num):
        example = generate_example(options, split, index)
        image = Image.fromarray(example["image"])
        plain = out_dir / f"{split}_{index:03d}.png"
        image.save(plain)
        draw = ImageDraw.Draw(image)
        arm = max(2.0, options.head_radius_far)
        for x, y in example["points"]:
            draw.line([(x - arm, y), (x + arm, y)], fill=(255, 0, 0))
            draw.line([(x, y - arm), (x, y + arm)], fill=(255, 0, 0))
        marked = out_dir / f"{split}_{index:03d}_points.png"
        image.save(marked)
        written += [plain, marked]
        print(f"{plain.name}: {len(example['points'])} heads")
    return written


def main(argv=None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num", type=int, default=8, help="number of examples")
    parser.add_argument("--split", default="train", choices=SPLITS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], help="NAME=VALUE of SyntheticCrowdOptions")
    args = parser.parse_args(argv)
    fields = {"seed": args.seed}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--option must be NAME=VALUE, got {item!r}")
        fields[key] = ast.literal_eval(value)
    try:
        options = SyntheticCrowdOptions.from_value(fields)
    except ValueError as error:
        parser.error(str(error))
    render_examples(args.out, num=args.num, split=args.split, options=options)


if __name__ == "__main__":
    main()

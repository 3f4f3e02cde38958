"""Convert PyTorch VGG19 weights once into a gcc_jax model directory.

    python -m gcc_jax.convert_weights IN.pth OUT_DIR [--variant gl|bl|dm_count|l2]
        [--upsample nearest|bilinear --output abs|relu] [--head keep|init] [--seed 0] [--overwrite]

IN.pth is torchvision's ImageNet VGG19 (``vgg19-dcbb9e9d.pth``; the head is initialised) or an
official GL / BL / DM-Count checkpoint (``.pth`` state dict or ``.tar`` with
``model_state_dict``; the head is kept). OUT_DIR receives the orbax variables and
``model.json`` (model options, source file, head), read back by
:func:`gcc_jax.models.load_variables` — training uses it as initialisation, inference as the
model.

PyTorch files do not record the upsampling / output activation, so they come from
``--variant`` (the loss the network was or will be trained with, see
:func:`gcc_jax.models.official_head`) or from ``--upsample`` and ``--output``; a DM-Count file
(``density_layer``) implies ``dm_count``. A GL/BL checkpoint or an ImageNet file needs one
of them, because a wrong guess would silently change every count.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gcc_jax import cli
from gcc_jax.models import (
    OFFICIAL_HEADS,
    OUTPUT_ACTIVATIONS,
    UPSAMPLE_MODES,
    VGG19Density,
    load_torch_state_dict,
    official_head,
    param_count,
    params_from_torch,
    save_variables,
    torch_head_layout,
)

__all__ = ["convert", "main"]


def convert(
    in_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    variant: str | None = None,
    upsample: str | None = None,
    output: str | None = None,
    head: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Converts ``in_path`` and writes the model directory ``out_dir``.

    Args:
      in_path: PyTorch checkpoint (see the module docstring).
      out_dir: output folder (:func:`gcc_jax.models.save_variables` layout).
      variant: loss whose official network head to use (a name of
        :data:`gcc_jax.models.OFFICIAL_HEADS`); excludes ``upsample`` / ``output``.
      upsample: ``"nearest"`` or ``"bilinear"``, with ``output``, instead of ``variant``.
      output: ``"abs"`` or ``"relu"``, with ``upsample``.
      head: ``"keep"`` or ``"init"``; ``None`` keeps the file's head when it has one and
        initialises it otherwise.
      seed: PRNG seed of a freshly initialised head.
      overwrite: replace a model already in ``out_dir``.

    Returns:
      The ``model.json`` record written (model options plus ``source``, ``head``,
      ``torch_layout``, ``params``).

    Raises:
      ValueError: conflicting or missing options, or a file that does not fit (see
        :func:`gcc_jax.models.params_from_torch`).
    """
    state = load_torch_state_dict(in_path)
    layout = torch_head_layout(state)
    if variant is not None and (upsample is not None or output is not None):
        raise ValueError("give either variant or upsample/output, not both")
    if variant is not None:
        options = official_head(variant)
    elif upsample is not None or output is not None:
        if upsample is None or output is None:
            raise ValueError("upsample and output must be given together")
        options = {"upsample": upsample, "output": output}
    elif layout == "density_layer":
        options = official_head("dm_count")
    else:
        kind = "a GL/BL checkpoint (reg_layer head)" if layout else "an ImageNet VGG19 (no head)"
        raise ValueError(
            f"{in_path} is {kind}: choose the head with variant (one of {', '.join(OFFICIAL_HEADS)}) "
            f"or with upsample and output"
        )
    if head is None:
        head = "keep" if layout else "init"
    variables = params_from_torch(state, head=head, rng=seed)
    model_options = {"width": variables["params"]["features"]["conv1_1"]["kernel"].shape[-1] / 64, **options}
    model = VGG19Density(**model_options)
    metadata = {
        "source": os.path.abspath(os.fspath(in_path)),
        "head": head,
        "torch_layout": layout or "imagenet",
        "params": param_count(variables),
    }
    save_variables(out_dir, variables, model_options, metadata=metadata, overwrite=overwrite)
    return {"model_options": {name: getattr(model, name) for name in model_options}, **metadata}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m gcc_jax.convert_weights",
        description="Convert PyTorch VGG19 weights (torchvision ImageNet, or an official GL / BL / "
        "DM-Count checkpoint) into a gcc_jax model directory.",
    )
    parser.add_argument("in_path", metavar="IN.pth", help="PyTorch .pth state dict or .tar training checkpoint")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output model directory")
    parser.add_argument("--variant", choices=tuple(OFFICIAL_HEADS), help="loss the model is trained with (sets upsample and output)")
    parser.add_argument("--upsample", choices=UPSAMPLE_MODES, help="×2 upsampling (with --output, instead of --variant)")
    parser.add_argument("--output", choices=OUTPUT_ACTIVATIONS, help="output activation (with --upsample)")
    parser.add_argument("--head", choices=("keep", "init"), help="default: keep the file's head, init when it has none")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed for an initialised head")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in OUT_DIR")
    cli.add_debug_argument(parser)
    args = parser.parse_args(argv)

    def work():
        record = convert(
            args.in_path,
            args.out_dir,
            variant=args.variant,
            upsample=args.upsample,
            output=args.output,
            head=args.head,
            seed=args.seed,
            overwrite=args.overwrite,
        )
        opts = record["model_options"]
        print(
            f"wrote {os.path.abspath(args.out_dir)}: VGG19Density(width={opts['width']:g}, "
            f"upsample={opts['upsample']!r}, output={opts['output']!r}), {record['params']:,} parameters, "
            f"head {record['head']} (file layout: {record['torch_layout']})"
        )

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

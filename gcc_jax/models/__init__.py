"""The VGG19 density regressor of GL / BL / DM-Count in Flax, and its weights from PyTorch.

- :class:`VGG19Density` — ``model.apply(variables, images)``: ``[B, H, W, 3]`` ImageNet-normalised
  RGB (:func:`normalize_images`) → density ``[B, ceil(H/8), ceil(W/8)]`` (:func:`output_shape`).
- :func:`params_from_torch` — variables from torchvision's ImageNet VGG19 or an official
  GL / BL / DM-Count checkpoint (needs ``pip install "gcc_jax[torch]"``).
- :func:`save_variables` / :func:`load_variables` — a model directory (orbax + ``model.json``),
  as written by ``python -m gcc_jax.convert_weights IN.pth OUT_DIR``.
- :func:`official_head` — the head (``upsample``, ``output``) that a loss's official code trains
  (:data:`OFFICIAL_HEADS`).
- :func:`param_count`, :func:`forward_flops`, :func:`model_summary` — size and cost
  (``python -m gcc_jax.models --width 1 --size 512 512`` prints the table).
"""

from gcc_jax.imagenet import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from gcc_jax.models._checkpoint import MODEL_OPTIONS, load_variables, save_variables
from gcc_jax.models._heads import OFFICIAL_HEADS, OfficialHead, official_head
from gcc_jax.models._torch_weights import load_torch_state_dict, params_from_torch, torch_head_layout
from gcc_jax.models._vgg import (
    OUTPUT_ACTIVATIONS,
    STRIDE,
    UPSAMPLE_MODES,
    ConvSpec,
    VGG19Density,
    conv_layers,
    output_shape,
)
from gcc_jax.models._summary import forward_flops, model_summary, param_count

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_OPTIONS",
    "OFFICIAL_HEADS",
    "OUTPUT_ACTIVATIONS",
    "STRIDE",
    "UPSAMPLE_MODES",
    "ConvSpec",
    "OfficialHead",
    "VGG19Density",
    "conv_layers",
    "forward_flops",
    "load_torch_state_dict",
    "load_variables",
    "model_summary",
    "normalize_images",
    "official_head",
    "output_shape",
    "param_count",
    "params_from_torch",
    "save_variables",
    "torch_head_layout",
]

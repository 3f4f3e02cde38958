"""UCF-QNRF, GL loss (or BL / DM-Count / L2 with their own recipes), VGG19 from ImageNet weights.

    python -m gcc_jax.convert_weights vgg19-dcbb9e9d.pth /data/vgg19_imagenet --variant gl
    python train.py --config configs/qnrf.py --workdir runs/qnrf \\
        --config.dataset.manual_dir=/data/UCF-QNRF_ECCV18 \\
        --config.model.init_checkpoint=/data/vgg19_imagenet
    python -m gcc_jax.evaluate --workdir runs/qnrf --split test

Hardware: sized like the official GL code, one GPU with batch 1 (~1080 steps per epoch, 500
epochs); images are resized so the shorter side lies in [512, 2048] (BL / GL rule). On N
devices set ``--config.batch_size`` to a multiple of N.

Settings and their sources:
- crop 512: GL's default (``train.py --crop-size 512``) and DM-Count's QNRF setting;
- GL hyper-parameters (docs/losses.md): GL's official ``train.py``;
- the training recipe (learning rate, weight decay, warm-up, batch, epochs, validation
  interval, small-image policy) follows ``config.loss.name`` unless set explicitly: the table
  and its sources are in ``configs/default.py``;
- validation on the 120-image ``val`` split carved from Train (the BL / GL preprocessing);
  the reported numbers are on ``test``.

Reference result (GL paper, Wan, Liu & Chan, CVPR 2021; UCF-QNRF test): MAE 84.3, RMSE 147.5.
"""

import pathlib

from gcc_jax.runtime.config import load_config_module

default = load_config_module(pathlib.Path(__file__).with_name("default.py"))


def get_config(arg=None):
    config = default.get_config()
    config.dataset.name = "ucf_qnrf"
    config.dataset.eval_split = "val"
    # QNRF images hold up to ~12,900 heads; the densest 512 crops after resizing, thousands.
    config.dataset.max_points = 4096
    config.crop_size = 512
    return default.apply_config_arg(config, arg)

"""JHU-Crowd++, GL loss (or BL / DM-Count / L2 with their own recipes), VGG19 from ImageNet weights.

    python -m gcc_jax.convert_weights vgg19-dcbb9e9d.pth /data/vgg19_imagenet --variant gl
    python train.py --config configs/jhu.py --workdir runs/jhu \\
        --config.dataset.manual_dir=/data/jhu_crowd_v2.0 \\
        --config.model.init_checkpoint=/data/vgg19_imagenet
    python -m gcc_jax.evaluate --workdir runs/jhu --split test

Hardware: sized like the official GL code, one GPU with batch 1 (2272 steps per epoch);
images are resized so the shorter side lies in [512, 2048] (BL / GL rule). On N devices set
``--config.batch_size`` to a multiple of N.

Settings and their sources:
- crop 512: GL's default crop (no reference code publishes a JHU setting);
- GL hyper-parameters (docs/losses.md): GL's official ``train.py``;
- the training recipe (learning rate, weight decay, warm-up, batch, epochs, validation
  interval, small-image policy) follows ``config.loss.name`` unless set explicitly: the table
  and its sources are in ``configs/default.py``;
- validation on ``val``; the reported numbers are on ``test``.

Reference result (GL paper, Wan, Liu & Chan, CVPR 2021; JHU-Crowd++ test): MAE 59.9, RMSE 259.5.
"""

import pathlib

from gcc_jax.runtime.config import load_config_module

default = load_config_module(pathlib.Path(__file__).with_name("default.py"))


def get_config(arg=None):
    config = default.get_config()
    config.dataset.name = "jhu_crowd"
    config.dataset.eval_split = "val"
    # JHU images hold up to ~25,800 heads; the densest 512 crops after resizing, thousands.
    config.dataset.max_points = 4096
    config.crop_size = 512
    return default.apply_config_arg(config, arg)

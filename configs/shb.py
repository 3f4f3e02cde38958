"""ShanghaiTech Part B, GL loss (or BL / DM-Count / L2 with their own recipes), VGG19 from ImageNet weights.

    python -m gcc_jax.convert_weights vgg19-dcbb9e9d.pth /data/vgg19_imagenet --variant gl
    python train.py --config configs/shb.py --workdir runs/shb \\
        --config.dataset.manual_dir=/data/ShanghaiTech \\
        --config.model.init_checkpoint=/data/vgg19_imagenet
    python -m gcc_jax.evaluate --workdir runs/shb --split test

Hardware: sized like the official GL code, one GPU with batch 1 (400 steps per epoch, 500
epochs). On N devices set ``--config.batch_size`` to a multiple of N.

Settings and their sources:
- crop 512: GL's default crop, and DM-Count's setting for SHB (all SHB images are
  768 × 1024);
- GL hyper-parameters (docs/losses.md): GL's official ``train.py``;
- the training recipe (learning rate, weight decay, warm-up, batch, epochs, validation
  interval, small-image policy) follows ``config.loss.name`` unless set explicitly: the table
  and its sources are in ``configs/default.py``;
- SHB has no validation split: the test split is the validation split, as in the references.

Reference result (GL paper, Wan, Liu & Chan, CVPR 2021; ShanghaiTech B): MAE 7.3, RMSE 11.7.
"""

import pathlib

from gcc_jax.runtime.config import load_config_module

default = load_config_module(pathlib.Path(__file__).with_name("default.py"))


def get_config(arg=None):
    config = default.get_config()
    config.dataset.name = "shanghaitech/part_b"
    config.dataset.eval_split = "test"
    # SHB images hold at most ~580 heads.
    config.dataset.max_points = 1024
    config.crop_size = 512
    return default.apply_config_arg(config, arg)

"""NWPU-Crowd, GL loss (or BL / DM-Count / L2 with their own recipes), VGG19 from ImageNet weights.

    python -m gcc_jax.convert_weights vgg19-dcbb9e9d.pth /data/vgg19_imagenet --variant gl
    python train.py --config configs/nwpu.py --workdir runs/nwpu \\
        --config.dataset.manual_dir=/data/NWPU-Crowd \\
        --config.model.init_checkpoint=/data/vgg19_imagenet
    python -m gcc_jax.evaluate --workdir runs/nwpu --split val

Hardware: sized like the official GL code, one GPU with batch 1 (3109 steps per epoch);
images are resized so the shorter side lies in [512, 2048] (BL / GL rule). On N devices set
``--config.batch_size`` to a multiple of N.

Settings and their sources:
- crop 384: DM-Count's per-dataset setting for NWPU (``datasets/dataset_cfg.json``);
- GL hyper-parameters (docs/losses.md): GL's official ``train.py``;
- the training recipe (learning rate, weight decay, warm-up, batch, epochs, validation
  interval, small-image policy) follows ``config.loss.name`` unless set explicitly: the table
  and its sources are in ``configs/default.py``; with ``--config.loss.name=dm_count`` it
  validates every 50 epochs on NWPU (DM-Count's ``datasets/dataset_cfg.json``);
- validation on ``val``; the test split is unannotated (scored by the NWPU server).

Reference result (GL paper, Wan, Liu & Chan, CVPR 2021; NWPU-Crowd test): MAE 79.3, RMSE 346.1.
"""

import pathlib

from gcc_jax.runtime.config import load_config_module

default = load_config_module(pathlib.Path(__file__).with_name("default.py"))


def get_config(arg=None):
    config = default.get_config()
    config.dataset.name = "nwpu_crowd"
    config.dataset.eval_split = "val"
    # NWPU images hold up to ~20,000 heads; the densest 384 crops after resizing, thousands.
    config.dataset.max_points = 4096
    config.crop_size = 384
    return default.apply_config_arg(config, arg)

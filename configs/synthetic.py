"""Synthetic crowds, narrow VGG19 from scratch, GL loss: the README's main command.

    python train.py --config configs/synthetic.py --workdir /tmp/gcc_synthetic

Sized for: 2 CPU cores, no accelerator, no download (the images are generated from a seed;
see gcc_jax.data.synthetic). Expected: a few minutes; the validation MAE falls far below the
trivial predictor's (the mean training count predicted for every image), which the console
and metrics.jsonl report beside it.

Differences from the dataset configs, and why:
- width 1/8 VGG19 initialised at random (no ImageNet weights to download): a few minutes
  of CPU instead of hours;
- learning rate 1e-3 without warm-up: 1e-5 is the references' rate for *fine-tuning*
  ImageNet weights; a randomly initialised narrow network barely moves at that rate;
- crop 128 of 256 × 256 images, batch 8.
"""

import pathlib

from gcc_jax.training.config import load_config_module

default = load_config_module(pathlib.Path(__file__).with_name("default.py"))


def get_config(arg=None):
    config = default.get_config()
    config.dataset.name = "synthetic_crowd"
    config.dataset.train_split = "train"
    config.dataset.eval_split = "val"
    config.dataset.max_points = 160  # max_people is 150
    config.crop_size = 128
    config.batch_size = 8
    config.eval_batch_size = 8
    config.model.width = 1 / 8
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_epochs = 0
    config.optimizer.decay = "cosine"
    config.num_epochs = 10
    config.eval_every_epochs = 1
    config.log_every_steps = 10
    config.checkpoint_every_steps = 100
    return default.apply_config_arg(config, arg)

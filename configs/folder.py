"""Your own images: fine-tune a trained model on a folder of annotated photos (data set ``folder``).

    python -m gcc_jax.data.build --dataset folder --manual_dir my_photos --data_dir my_tfds
    python train.py --config configs/folder.py --workdir runs/mine \\
        --config.dataset.data_dir=my_tfds --config.model.init_checkpoint=runs/sha
    python -m gcc_jax.evaluate --workdir runs/mine --split test

``--config.model.init_checkpoint`` is the workdir of an earlier training run (its best
checkpoint; its model width must be this config's) or a model directory written by
``python -m gcc_jax.convert_weights``. The folder's photos can be of any size and shape;
README "Your own images" shows the whole path from annotation to prediction.

Sized for: tens to a few thousand photos, one GPU (or a CPU for a few hundred steps of the full
VGG19: about a second a step at this crop on 2 cores). With ``n`` training photos a run is
``100 · n`` steps; for more than a few hundred photos lower ``--config.num_epochs`` (e.g. 20
for 2000 photos) or set ``--config.num_train_steps``. Expected: the validation MAE falls
below the starting model's in the first evaluations (evaluation runs at step 0, so the first
row of ``metrics.jsonl`` is the starting model on your validation photos). No reference
numbers exist for your data; compare with the trivial predictor the console prints.

Settings, and why:
- crop 384: photos are used at their own size (as ``gcc_jax.predict`` sees them; the data set
  has no resize rule), a photo smaller than the crop is padded (GL's recipe), and 384 is
  between ShanghaiTech's 256 and the 512 of the larger data sets: a phone photo still yields
  varied crops, a 640 × 480 photo needs little padding;
- learning rate 1e-5 (the references' fine-tuning rate), no warm-up (the start is already a
  counting model, not ImageNet features), cosine decay to 0 so the last model stays near the
  best one on a small validation split;
- batch 1 and evaluation one photo at a time: photos of different sizes, as GL trains;
- 100 epochs, validation every 5: tens of photos make short epochs; validation on ``val``
  (``train/ val/ test/`` sub-folders or the hashed 10 %), the best checkpoint kept by its MAE;
- at most 2048 heads per crop, as the dense data sets.
"""

import pathlib

from gcc_jax.runtime.config import load_config_module

default = load_config_module(pathlib.Path(__file__).with_name("default.py"))


def get_config(arg=None):
    config = default.get_config()
    config.dataset.name = "folder"
    config.dataset.train_split = "train"
    config.dataset.eval_split = "val"
    config.dataset.max_points = 2048
    config.crop_size = 384
    config.batch_size = 1
    config.eval_batch_size = 1
    config.optimizer.learning_rate = 1e-5
    config.optimizer.warmup_epochs = 0
    config.optimizer.schedule = "cosine"
    config.num_epochs = 100
    config.eval_every_epochs = 5
    config.log_every_steps = 20
    config.checkpoint_every_steps = 500
    return default.apply_config_arg(config, arg)

"""Default configuration of ``train.py``: every field, with what it means and where it comes from.

The dataset configs (``sha.py``, ``shb.py``, ``qnrf.py``, ``nwpu.py``, ``jhu.py``) and
``synthetic.py`` start from this one and change a few fields. Any field can be overridden on
the command line; the config is locked, so a mistyped name fails::

    python train.py --config configs/sha.py --workdir /tmp/sha \\
        --config.batch_size=8 --config.loss.name=bl

``get_config("runlocal")`` (``--config configs/X.py:runlocal``) shrinks a config into a short
run (narrow model, small crop, a few steps, a few evaluation images; a minute or two on 2 CPU
cores, nearly all of it start-up and compilation) for checking that a setup works end to end,
in the manner of big_vision's ``runlocal``.

Training recipes. The fields marked *recipe* below are ``None`` here: when the run starts they
take the values of the official trainer of ``config.loss.name``
(:mod:`gcc_jax.runtime.recipes`), unless a config file or the command line set them. So
``--config.loss.name=bl`` alone trains with BL's recipe and an explicit
``--config.optimizer.learning_rate=...`` still wins; the workdir's ``config.json`` shows the
resolved values and the log says where each came from:

=========================== ============ ============ ============
field                       GL           BL           DM-Count
=========================== ============ ============ ============
optimizer.learning_rate     1e-5         1e-5         1e-5
optimizer.weight_decay      1e-5         1e-4         1e-4
optimizer.warmup_epochs     10           0            0
batch_size                  1            1            10
num_epochs                  500          1000         1000
eval_every_epochs           5            5            5 (NWPU 50)
dataset.min_size_policy     pad          pad          upscale
=========================== ============ ============ ============

Sources: GL ``train.py`` and ``utils/emd_dot_trainer.py`` (warm-up ``lr · (e + 1) / 10`` in
epoch ``e < 10``, set once per epoch) of jia-wan/GeneralizedLoss-Counting-Pytorch; BL
``train.py`` of ZhihengCV/Bayesian-Crowd-Counting; DM-Count ``train.py`` and
``datasets/dataset_cfg.json`` (per data set: crop, ``val_epoch``) and ``datasets/crowd.py``
(upscaling) of cvlab-stonybrook/DM-Count. L2 (no official trainer) trains with GL's recipe.
All three use ``torch.optim.Adam(lr, weight_decay)``: L2 added to the gradient before Adam's
scaling, which :func:`gcc_jax.training.create_optimizer` reproduces.
"""

import ml_collections
from ml_collections import config_dict

from gcc_jax.data import DEFAULT_IMAGE_CACHE_BYTES, SyntheticCrowdOptions
from gcc_jax.localization import PeakSettings


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The default config; ``arg="runlocal"`` shrinks it for a quick local check."""
    config = ml_collections.ConfigDict()

    # Seed of the parameter initialisation and of the training data order and augmentation
    # (crop corners, flips): the run is a function of (config, seed).
    config.seed = 0

    config.dataset = ml_collections.ConfigDict()
    # Data set name: shanghaitech/part_a, shanghaitech/part_b, ucf_qnrf, nwpu_crowd, jhu_crowd,
    # synthetic_crowd (see gcc_jax.data).
    config.dataset.name = "shanghaitech/part_a"
    # TFDS data directory holding the prepared data set (None = TFDS's default, ~/tensorflow_datasets).
    config.dataset.data_dir = config_dict.placeholder(str)
    # Folder of the raw downloaded files; when set, the data set is prepared from it on first use.
    config.dataset.manual_dir = config_dict.placeholder(str)
    # Split to train on (TFDS split expressions such as "train+val" work).
    config.dataset.train_split = "train"
    # Split evaluated during training (validation curve, best checkpoint).
    config.dataset.eval_split = "test"
    # Images whose shorter side is below the crop: "pad" (bottom / right, ImageNet mean colour)
    # or "upscale" (DM-Count's rule). Recipe: DM-Count upscale, GL / BL pad.
    config.dataset.min_size_policy = config_dict.placeholder(str)
    # Head points per training crop after padding (fixed shapes for jit); a crop with more
    # heads loses the extra ones with a logged warning, so keep it above the densest crop.
    config.dataset.max_points = 2048
    # Evaluation images are zero-padded (ImageNet mean colour) to a multiple of this; larger
    # values bucket sizes into fewer shapes, hence fewer compilations. Counts are taken over
    # the image's own cells only, so padding never adds people.
    config.dataset.eval_pad_multiple = 16
    # Input pipeline: "tf.data" (TensorFlow) or "grain" (no TensorFlow needed; PIL + numpy in
    # worker threads). Both give the same batches (see gcc_jax.data); evaluation uses it too.
    config.dataset.loader = "tf.data"
    # Decoded training images kept in memory between epochs, per process, in MiB (0 = decode
    # every epoch). ShanghaiTech part A takes about 0.5 GiB, part B about 0.9 GiB.
    config.dataset.image_cache_mib = DEFAULT_IMAGE_CACHE_BYTES // 2**20  # 2048
    # Options of synthetic_crowd (used only when name == "synthetic_crowd"): the fields and
    # their meaning are those of gcc_jax.data.SyntheticCrowdOptions.
    config.dataset.synthetic = ml_collections.ConfigDict(SyntheticCrowdOptions().to_dict())

    # Side of the square training crops in pixels (GL's default; see each dataset config).
    config.crop_size = 512
    # Global training batch (all devices of all hosts); must be a multiple of the device count.
    # Recipe: GL 1, BL 1, DM-Count 10.
    config.batch_size = config_dict.placeholder(int)
    # Evaluation images per batch on each process (the references evaluate one image at a time).
    config.eval_batch_size = 1

    config.model = ml_collections.ConfigDict()
    # Channel multiplier of VGG19Density (1.0 = the published network; a multiple of 1/64).
    config.model.width = 1.0
    # Model directory to start from (written by `python -m gcc_jax.convert_weights`, e.g. the
    # ImageNet VGG19), or the workdir of an earlier training run (its best checkpoint, e.g. to
    # fine-tune on your own images: configs/folder.py); None = random initialisation. The
    # references start from ImageNet VGG19.
    config.model.init_checkpoint = config_dict.placeholder(str)
    # Computation dtype: "float32" or "bfloat16" (parameters and density stay float32).
    config.model.dtype = "float32"

    config.loss = ml_collections.ConfigDict()
    # Training loss: "gl" (Generalized Loss), "bl" (Bayesian Loss), "dm_count", "l2". The
    # model head follows the loss's official code (gcc_jax.models.OFFICIAL_HEADS).
    config.loss.name = "gl"
    # GL hyper-parameters: the official train.py defaults (docs/losses.md); see
    # gcc_jax.losses.GLHyperParameters for each.
    config.loss.gl = ml_collections.ConfigDict()
    config.loss.gl.cost = "per"  # "per" (perspective-guided) or "exp"
    config.loss.gl.scale = 0.6  # length scale of the "exp" cost (normalised units)
    config.loss.gl.blur = 0.01  # final entropic blur (ε = blur^p); also the entropy weight
    config.loss.gl.reach = 0.5  # unbalanced-OT reach (ρ = reach^p)
    config.loss.gl.scaling = 0.5  # ε-annealing ratio of the reference solver
    config.loss.gl.p = 1.0  # exponent of geomloss's blur / reach parameterisation
    config.loss.gl.tau = 0.1  # weight of the point and pixel terms
    config.loss.gl.d_point = "l1"  # divergence of the point term: "l1" or "l2"
    config.loss.gl.d_pixel = "l2"  # divergence of the pixel term: "l1" or "l2"
    config.loss.gl.solver = "reference"  # "reference" (official ~10-step loop) or "converged"
    # The "converged" solver (ott-jax Sinkhorn): iteration cap and marginal-error tolerance.
    config.loss.gl.max_iterations = 2000
    config.loss.gl.threshold = 1e-4
    config.loss.gl.cell_offset = "reference"  # cell positions: "reference" quirk or "centre"
    # Batch loss from the per-image terms: "reference" (GL's trainer: OT, point and pixel
    # terms averaged over the batch, entropy terms summed) or "mean" (every total averaged).
    config.loss.gl.batch_reduction = "reference"
    # Layout of the computation, not its result: "chunked" (fastest on CPU), "dense" (GPU/TPU),
    # "auto" (chunked on CPU, dense elsewhere).
    config.loss.gl.implementation = "auto"
    # Cells below it enter GL at this value, gradient passed through (see generalized_loss):
    # 0 keeps the reference's numbers; a small value (1e-4) bounds the gradient of a map that
    # has collapsed to zero under heads.
    config.loss.gl.density_floor = 0.0
    # BL hyper-parameters: the 2021 official code (docs/losses.md); see gcc_jax.losses.bayesian_loss.
    # Start from ImageNet weights (model.init_checkpoint) as the official code does: from a
    # random start the 2021 background collapses the map to zero (docs/losses.md, "BL").
    config.loss.bl = ml_collections.ConfigDict()
    config.loss.bl.sigma = 8.0  # head likelihood std in pixels
    config.loss.bl.use_background = True  # add the background posterior row
    config.loss.bl.background_ratio = 1.0  # d = st_size · ratio (0.15 in the 2019 code)
    config.loss.bl.background = "2021"  # background model: "2021" or "2019"
    # DM-Count hyper-parameters: the official defaults (docs/losses.md); see gcc_jax.losses.dm_count_loss.
    config.loss.dm_count = ml_collections.ConfigDict()
    config.loss.dm_count.wot = 0.1  # weight of the OT term
    config.loss.dm_count.wtv = 0.01  # weight of the TV term
    config.loss.dm_count.reg = 10.0  # Sinkhorn entropic regularisation (pixels²)
    config.loss.dm_count.num_iters = 100  # Sinkhorn iterations
    # Pixel-wise L2 against Gaussian-smoothed points (docs/losses.md); see gcc_jax.losses.l2_loss.
    config.loss.l2 = ml_collections.ConfigDict()
    config.loss.l2.sigma = 15.0  # fixed kernel std in pixels (the ShanghaiTech B habit)
    config.loss.l2.adaptive = False  # geometry-adaptive kernels instead of sigma

    config.optimizer = ml_collections.ConfigDict()
    # Peak learning rate of Adam. Recipe: 1e-5 (all three references).
    config.optimizer.learning_rate = config_dict.placeholder(float)
    # L2 weight decay as torch.optim.Adam applies it (wd · θ added to the gradient *before*
    # Adam's scaling, not AdamW's decoupled decay). Recipe: GL 1e-5, BL and DM-Count 1e-4.
    config.optimizer.weight_decay = config_dict.placeholder(float)
    # Warm-up epochs: lr · (e + 1) / warmup_epochs in epoch e < warmup_epochs, as GL's trainer
    # does (a step per epoch); 0 = constant lr. Recipe: GL 10, BL and DM-Count 0.
    config.optimizer.warmup_epochs = config_dict.placeholder(int)
    # Learning-rate schedule after the warm-up: "constant" (the references) or "cosine" (down
    # to 0 at the last step).
    config.optimizer.schedule = "constant"
    # Adam's moment decay rates and epsilon (torch's defaults).
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8

    # Length of the run in epochs over the training split. Recipe: GL 500, BL and DM-Count 1000.
    config.num_epochs = config_dict.placeholder(int)
    # If positive, stop after this many steps instead (overrides num_epochs).
    config.num_train_steps = -1
    # Evaluate every this many epochs; also at step 0 and at the end. Recipe: 5 (DM-Count on
    # NWPU-Crowd: 50).
    config.eval_every_epochs = config_dict.placeholder(int)
    # Average the training metrics over and write them every this many steps.
    config.log_every_steps = 100
    # Save a resumable checkpoint every this many steps (and at the end of the run).
    config.checkpoint_every_steps = 1000
    # Resumable checkpoints kept (the best one by validation MAE is kept apart, always).
    config.max_checkpoints_to_keep = 2
    # Validation images drawn as density-map pictures at each evaluation (PNG + TensorBoard).
    config.num_pictures = 4

    # Localization metrics of the evaluations, beside the counting metrics (see
    # gcc_jax.localization_scoring.LocalizationOptions): peaks of the density map matched to
    # the heads, precision / recall / F1 summed over the split.
    config.localization = ml_collections.ConfigDict()
    # Compute them (a peak search and a bipartite matching per image).
    config.localization.enabled = True
    # Peak threshold on the per-cell density scale (0.05 in GL's recipe). `python -m
    # gcc_jax.evaluate --workdir W --split val --choose_threshold` picks the best one on a
    # validation split and stores it in W/localization_threshold.json with the detector it was
    # chosen for (pixel_offset, one_per_plateau); evaluate, gcc_jax.predict, the NWPU writer and
    # export then use that choice whole instead of these three values (gcc_jax.inference).
    # The defaults of the three are gcc_jax.localization.PeakSettings' (GL's recipe).
    config.localization.threshold = PeakSettings.threshold
    # Fixed matching radii in original-image pixels (metrics loc/f1_r4, loc/f1_r8, ...); data
    # sets with head boxes (NWPU-Crowd, JHU-Crowd++) add NWPU's sigma_s and sigma_l.
    config.localization.radii = (4.0, 8.0)
    # Setting whose F1 --choose_threshold maximises: "auto" (sigma_l with boxes, else the
    # largest fixed radius), "sigma_l", "sigma_s" or "r<radius>".
    config.localization.choose_on = "auto"
    # Pixels added to both coordinates of every detected head. 0 is GL's recipe; a model
    # trained with loss.gl.cell_offset="reference" puts each head's mass half a cell (4 px)
    # up-left of it, which 4.0 compensates (see gcc_jax.localization.PeakSettings).
    config.localization.pixel_offset = PeakSettings.pixel_offset
    # One point per plateau of equal neighbouring maxima instead of every pixel of it (GL's
    # recipe); the upsampling makes such plateaus along every image border.
    config.localization.one_per_plateau = PeakSettings.one_per_plateau
    # Progress bar with ETA on the console (process 0 only).
    config.progress_bar = True

    return apply_config_arg(config, arg)


def apply_config_arg(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies the ``:arg`` of ``--config FILE:arg`` (every config file ends with this).

    Args:
      config: a complete config.
      arg: ``None`` / ``""`` (as is) or ``"runlocal"`` (:func:`shrink_for_runlocal`).

    Raises:
      ValueError: any other argument.
    """
    if arg == "runlocal":
        shrink_for_runlocal(config)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return config


def shrink_for_runlocal(config: ml_collections.ConfigDict) -> None:
    """Turns ``config`` into a short run that still touches every part of the program.

    Narrow model (width 1/16), crop 64, batch 2, 4 steps with a checkpoint every 2, and a
    handful of images: the synthetic set is made small, a real data set is cut to at most its first
    8 training and 2 evaluation images (TFDS split slicing, clamped to the split's size).
    """
    config.model.width = 1 / 16
    config.crop_size = 64
    config.batch_size = 2
    config.eval_batch_size = 2
    config.dataset.max_points = 512
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    config.num_pictures = 2
    config.optimizer.warmup_epochs = 0
    if config.dataset.name == "synthetic_crowd":
        config.dataset.synthetic.height = config.dataset.synthetic.width = 96
        config.dataset.synthetic.num_train = 8
        config.dataset.synthetic.num_val = 2
        config.dataset.synthetic.num_test = 2
    else:
        config.dataset.train_split += "[:8]"
        config.dataset.eval_split += "[:2]"

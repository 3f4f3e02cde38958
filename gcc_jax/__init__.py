"""gcc_jax: the Generalized Loss for crowd counting and localization, in JAX/Flax.

Subpackages and modules, in the order they depend on each other:
  losses        GL, Bayesian Loss, DM-Count and pixel-wise L2 as batched pure functions, and
                the registry of them (``LOSSES``).
  models        the VGG19 density regressor (flax.linen) and PyTorch weight import.
  data          TFDS builders and the two input pipelines (tf.data, Grain) over one plan.
  training      the data-parallel training program (``train_and_evaluate``).
  localization, localization_scoring, metrics
                density maps to head points; counting and localization metrics.
  image_results, localization_pictures
                per-image evaluation rows (CSV) and pictures of found / missed / false heads.
  inference     a trained model loaded from a workdir or a model directory; evaluation of it.
  predict, evaluate, convert_weights
                the commands (``python -m gcc_jax.<name>``); ``cli`` is their shared error
                handling.
"""

__version__ = "0.1.0"

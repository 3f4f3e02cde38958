"""gcc_jax: the Generalized Loss for crowd counting and localization, in JAX/Flax.

Subpackages:
  losses        GL, Bayesian Loss, DM-Count and pixel-wise L2 as batched pure functions.
  models        the VGG19 density regressor (flax.linen) and PyTorch weight import.
  data          TFDS builders and tf.data pipelines.
  training      the data-parallel training and evaluation program.
"""

__version__ = "0.1.0"

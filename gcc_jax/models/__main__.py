"""``python -m gcc_jax.models [--width W] [--size H W]``: parameters and FLOPs per layer."""

from gcc_jax.models._summary import main

__all__ = []

main()

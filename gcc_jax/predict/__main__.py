"""``python -m gcc_jax.predict --checkpoint DIR IMAGES... --out OUT`` (see :mod:`gcc_jax.predict._run`)."""

import sys

from gcc_jax.predict._run import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

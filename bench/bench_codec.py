"""Codec benchmark (`make bench`); the same as `neurowire bench codec`. See --help."""
import sys

from neurowire.codec.bench import main

if __name__ == "__main__":
    sys.exit(main())

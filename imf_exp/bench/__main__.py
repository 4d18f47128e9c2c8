"""``python -m imf_exp.bench``: see :mod:`imf_exp.bench`."""

from imf_exp.bench.cli import main

if __name__ == "__main__":
    main()

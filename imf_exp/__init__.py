"""imf-exp: a Hydra-configured experiment framework for Improved Mean Flow (iMF).

Entry points: ``python -m imf_exp.train`` (train, sample, evaluate one run or a sweep),
``imf_exp.sample`` (samples from a run folder), ``imf_exp.report`` (sweep folder -> tables and
figures), ``imf_exp.bench`` (side-by-side step timings). Conventions: ``t = 0`` data, ``t = 1``
noise, ``u(z_t, r, t)`` with ``r <= t``; see the README.
"""

__version__ = "0.1.0"

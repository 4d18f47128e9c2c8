"""imf-exp: a Hydra-configured experiment framework for Improved Mean Flow (iMF).

Entry points: ``python -m imf_exp.train`` (train, sample, evaluate one run or a sweep),
``imf_exp.sample`` (samples from a run folder), ``imf_exp.report`` (sweep folder -> tables and
figures), ``imf_exp.bench`` (side-by-side step timings). Conventions: ``t = 0`` data, ``t = 1``
noise, ``u(z_t, r, t)`` with ``r <= t``; see the README.
"""

import os

__version__ = "0.1.0"

# CPU threads that find their work done spin for a while before they sleep (GNU OpenMP: 300000
# spins by default). On a core another process holds, that spinning halves a 2-thread run's speed
# (measured: 62.7 steps/s alone, 19.6 beside a busy process; 1000 spins: 64.5 and 32.3). Read by
# OpenMP when torch loads it, so it is set here, before any module imports torch.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

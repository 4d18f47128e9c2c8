"""Side-by-side timings of one full training step, in one process.

    python -m imf_exp.bench                      # full benchmark (minutes on a GPU; long on a small CPU)
    python -m imf_exp.bench --quick              # tiny settings: a smoke test (CI)
    python -m imf_exp.bench --time-to-quality    # also train the default run and time it to quality

What is measured
----------------
*Steps per second of a full training step*: draw the data, noise and times; the loss (JVP
included); ``backward``; gradient clipping; the optimizer and LR-schedule step; the EMA update.
Every variant lives in the same process. Each first runs one step on its own (timed: for a
compiled variant this is where ``torch.compile`` traces and compiles, forward and backward), then
``--warmup`` untimed steps. Then come ``--rounds`` interleaved rounds: each round runs
every variant for its number of steps (round-robin, the start rotating each round, so slow
drifts of a shared machine hit every variant alike) and times it with one host sync at the end
of the round. The reported figure is the median over rounds. ``samples/s = steps/s * batch``.

Variants:

* ``baseline``: the design note's step as printed (made runnable): a concat MLP on
  ``[z, sin emb(r), sin emb(t)]`` with max period 10000 on raw ``t``; ``make_moons`` per step,
  standardized by the batch's own statistics; ``r, t`` independent; ``v = u(z, t, t)`` with a
  graph; per-sample ``vmap(jvp)``; ``loss.item()`` every step; plain Adam; a Python EMA loop.
* ``imf_fast``: ``imf_compiled`` with ``trainer.data_pool=64`` (64 batches drawn in one call)
  and ``trainer.fused_update=true`` (clipping, Adam and EMA as one compiled function): the
  opt-in speed settings.
* ``imf_plain_compiled``: ``imf_compiled`` under a plain ``torch.compile``, without the
  zero-matmul pass and the C++ wrapper of ``imf_exp/compile.py`` (what they are worth).
* ``imf_eager``, ``imf_compiled``, ``meanflow``, ``flow_matching_eager``,
  ``flow_matching_compiled``: the trainer's own step (:class:`imf_exp.trainer.TrainStep`, what
  :meth:`imf_exp.trainer.Trainer.fit` runs) fed by its :class:`imf_exp.trainer.BatchStream`:
  the project's models, objectives, data (``Moons`` with its fixed standardization), time
  sampler, optimizer (Adam ``foreach``) and LR schedule, ``foreach`` clipping and
  ``_foreach_lerp_`` EMA; no host sync per step. ``*_compiled`` wraps the loss function (JVP
  included) in ``torch.compile`` with the zero-matmul pass and, on CPU, the C++ wrapper
  (``imf_exp/compile.py``), as ``trainer.compile=on`` does.

Configurations: ``a`` the design note's (concat MLP width 64, depth 3, batch 256) for every
variant; ``b`` the project's default model and ``trainer.batch_size`` (composed from ``conf/``);
``c`` a batch-size sweep of the ``b`` model for iMF (eager, compiled) and flow matching.
``--quick`` shrinks the models and batches and compiles in ``a`` only (each compilation costs
5-20 s on a small CPU).

*Compile time* = the first step's wall time minus the variant's median step time.
The inductor cache is a fresh, empty folder by default (what a first run pays); ``--quick`` uses
the user's cache (``--compile-cache``). A variant whose compilation fails is reported with its
error and left out of the rounds.

*Memory* (per variant, one extra step after the rounds): ``saved_bytes`` is the sum of the
distinct storages autograd saves for backward in one step (through
``torch.autograd.graph.saved_tensors_hooks``; parameters excluded, they are state), the
activation memory a step keeps alive until ``backward``. It counts neither the transients freed
during the forward pass nor the workspace of the kernels, so it is a lower bound of the step's
peak. ``state_bytes`` = parameters + gradients + optimizer state + EMA copy. On CUDA
``cuda_peak_step_bytes`` is ``max_memory_allocated`` during that step minus the memory allocated
before it (all the transients included).

*Time to quality* (``--time-to-quality``): runs ``python -m imf_exp.train`` (the default run:
circles, default model, ``trainer.steps`` steps) in a subprocess with ``trainer.eval_every=200``
into the bench folder, and reports the first eval step whose ``nfe1/w2_ratio`` is under the
threshold (1.3), with two clocks: ``train_seconds``, the sum of the trainer's own timed
log intervals up to that step (``steps / steps_per_s`` of each ``history`` row: training steps
only, evaluations and checkpoints excluded, the first interval's start-up included); and
``wall_seconds``, from the ``run folder:`` line to that eval's ``step N:`` line in ``train.log``
(everything, including the evaluations every 200 steps, which a default run does every 1000).

Modules: :mod:`.cli` (flags, presets, the run), :mod:`.baseline` (the design note's step),
:mod:`.variants` (what is built and timed), :mod:`.timing` (first step, rounds, memory),
:mod:`.ratios`, :mod:`.quality` (time to quality), :mod:`.report` (table, sweep, JSON).
"""

"""The variants the benchmark times, and the settings it records.

``a/baseline`` is the design note's step (:mod:`imf_exp.bench.baseline`). Every other variant is
the trainer's own step, :class:`imf_exp.trainer.TrainStep`, fed by a
:class:`imf_exp.trainer.BatchStream` (generator seeded 0), with the objects composed from
``conf/`` as ``python -m imf_exp.train`` composes them. A variant is built when it is prepared,
right after ``torch.manual_seed(0)`` (:func:`imf_exp.bench.timing.prepare`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imf_exp.bench.baseline import NoteMLP, make_note_step
from imf_exp.bench.timing import Step, Variant

ROOT = Path(__file__).resolve().parents[2]  # the repository
CONF_DIR = ROOT / "conf"
ROUND_REF_BATCH = 1024  # batches above this run steps_per_round * 1024 / batch steps per round
MIN_STEPS_PER_ROUND = 3
FAST_POOL = 64  # imf_fast: trainer.data_pool
OBJECTIVES = ("imf", "meanflow", "flow_matching")  # a kind's objective: the one it starts with
KINDS = ("imf_eager", "imf_compiled", "imf_plain_compiled", "imf_fast", "meanflow",
         "flow_matching_eager", "flow_matching_compiled")  # of (a) and (b), in this order
SWEEP_KINDS = ("imf_eager", "imf_compiled", "flow_matching_eager", "flow_matching_compiled")


@dataclass
class Shared:
    """What the project's variants share, built from the default config (preset overrides)."""

    cfg: Any  # the composed default config
    overrides: list[str]
    objective_cfgs: dict[str, Any]  # by name in OBJECTIVES: the objective's config node
    objectives: dict[str, Any]
    boundary: Any  # shared: no auxiliary head
    dataset: Any  # Moons with its fixed standardization
    time_sampler: Any
    optimizer: Any


def compose_default(overrides: list[str]):
    """``conf/train.yaml`` with its defaults, composed as ``python -m imf_exp.train`` would."""
    from hydra import compose, initialize_config_dir

    from imf_exp.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def plain(node) -> dict:
    """A config node as JSON-ready data (Enums as their names)."""
    from imf_exp.config import to_dict

    return to_dict(node)


def load_shared(overrides: list[str]) -> Shared:
    """The objects built from the default config, with ``dataset=moons`` and each objective."""
    from imf_exp.build import instantiate_node

    cfg = compose_default(overrides)
    moons_cfg = compose_default(overrides + ["dataset=moons"])
    objective_cfgs = {n: compose_default(overrides + [f"objective={n}"]) for n in OBJECTIVES}
    return Shared(cfg, overrides, {n: c.objective for n, c in objective_cfgs.items()},
                  {n: instantiate_node(c, "objective") for n, c in objective_cfgs.items()},
                  boundary=instantiate_node(cfg, "boundary_mode"), dataset=instantiate_node(moons_cfg, "dataset"),
                  time_sampler=instantiate_node(cfg, "time_sampler"), optimizer=instantiate_node(cfg, "optimizer"))


def loss_compiler(kind: str, device: torch.device) -> Callable | None:
    """How ``kind`` compiles its loss: not at all (None); ``imf_plain_compiled``: a plain
    ``torch.compile``; the other ``*_compiled`` kinds and ``imf_fast``:
    :func:`imf_exp.compile.compile_loss` (zero-matmul pass, C++ wrapper on CPU), as
    ``trainer.compile=on`` does. Static shapes: every variant has one batch size."""
    if kind == "imf_plain_compiled":
        return functools.partial(torch.compile, dynamic=False)
    if kind.endswith("_compiled") or kind == "imf_fast":
        from imf_exp.compile import compile_loss

        return functools.partial(compile_loss, device=device, dynamic=False)
    return None


def project_step(shared: Shared, kind: str, model: nn.Module, batch: int, device: torch.device,
                 tag: str) -> Step:
    """The trainer's step of ``kind``: ``TrainStep.step`` on the next batch of a ``BatchStream``;
    ``imf_fast`` with ``trainer.data_pool=64`` and ``trainer.fused_update=true``. ``tag`` (the
    variant's name) gives a compiled loss its own Dynamo cache."""
    from imf_exp.trainer import BatchStream, TrainStep

    fast = kind == "imf_fast"
    compiler = loss_compiler(kind, device)
    objective = shared.objectives[next(n for n in OBJECTIVES if kind.startswith(n))]
    trainer = shared.cfg.trainer
    train = TrainStep(model, objective, shared.boundary, shared.optimizer, int(trainer.steps),
                      device, compile=compiler is not None, fused_update=fast,
                      ema_decay=float(trainer.ema_decay), tag=tag, compiler=compiler)
    gen = torch.Generator(device=device).manual_seed(0)
    stream = BatchStream(shared.dataset, shared.time_sampler, batch, gen, None,
                         FAST_POOL if fast else 0)
    counter = itertools.count()

    def run() -> torch.Tensor:
        return train.step(next(stream), next(counter))["loss"]

    return Step(run, train.model, [train.opt, list(train.ema.parameters())])


def round_steps(steps_per_round: int, batch: int) -> int:
    """A variant's steps per round: ``steps_per_round`` up to batch 1024, proportionally fewer
    above, at least 3."""
    return max(MIN_STEPS_PER_ROUND, int(steps_per_round * min(1.0, ROUND_REF_BATCH / batch)))


def kinds_in(config: str, compiled_in, no_compile: bool) -> list[str]:
    """The kinds of the project's step run in ``config``: compiled ones only where compiled."""
    compiled = not no_compile and config in compiled_in
    return [k for k in KINDS if compiled or not (k.endswith("_compiled") or k == "imf_fast")]


def sweep_plan(batch_sizes: list[int], b_batch: int, kinds: dict[str, list[str]]) -> list[dict]:
    """The cells of the sweep (c): ``{"batch", "kind", "variant"}``; at the batch of (b) the cell
    is (b)'s own measurement."""
    sweep = []
    for batch in batch_sizes:
        for k in SWEEP_KINDS:
            if k not in kinds["c"] or (batch == b_batch and k not in kinds["b"]):
                continue
            name = f"b/{k}" if batch == b_batch else f"c/{k}/b{batch}"
            sweep.append({"batch": batch, "kind": k, "variant": name})
    return sweep


def build_variants(args, preset: dict, device: torch.device) -> tuple[list[Variant], dict]:
    """Every variant, in the order they are prepared and timed, and the settings for the JSON."""
    from imf_exp.build import instantiate_node
    from imf_exp.models import MLP

    shared = load_shared(preset["default_overrides"])
    cfg, note = shared.cfg, preset["note"]
    b_batch = int(cfg.trainer.batch_size)
    kinds = {c: kinds_in(c, preset["compiled_in"], args.no_compile) for c in ("a", "b", "c")}

    def note_model():  # the note's shape in the project's MLP (no Fourier features of z)
        return MLP(2, width=note["width"], depth=note["depth"], time_input="t,r",
                   embedding_dim=note["embedding_dim"])

    def default_model():
        return instantiate_node(cfg, "model", dim=2, aux_head=False)

    def ours(name, config, kind, make_model, batch, desc):
        def build():
            return project_step(shared, kind, make_model(), batch, device, name)

        return Variant(name, config, kind, batch, desc, build, round_steps(args.steps_per_round, batch))

    def baseline():
        model = NoteMLP(note["width"], note["depth"], note["embedding_dim"]).to(device)
        return make_note_step(model, note["batch"], device)

    desc_a = f"MLP w{note['width']} d{note['depth']} emb{note['embedding_dim']}"
    m = cfg.model
    desc_b = f"{m._target_.rsplit('.', 1)[-1]} w{m.width} d{m.depth} emb{m.embedding_dim}"
    variants = [Variant("a/baseline", "a", "baseline", note["batch"], "note " + desc_a, baseline,
                        round_steps(args.steps_per_round, note["batch"]))]
    variants += [ours(f"a/{k}", "a", k, note_model, note["batch"], desc_a) for k in kinds["a"]]
    variants += [ours(f"b/{k}", "b", k, default_model, b_batch, desc_b) for k in kinds["b"]]
    sweep = sweep_plan(args.batch_sizes, b_batch, kinds)
    variants += [ours(s["variant"], "c", s["kind"], default_model, s["batch"], desc_b)
                 for s in sweep if s["batch"] != b_batch]
    settings = {
        "a": {"model": desc_a, "time_input": "t,r", "batch": note["batch"], "data": "moons"},
        "b": {"model": plain(cfg.model), "batch": b_batch, "data": "moons",
              "overrides": shared.overrides},
        "c": {"model": desc_b, "batch_sizes": args.batch_sizes, "sweep": sweep},
        "objectives": {n: plain(c) for n, c in shared.objective_cfgs.items()},
        "time_sampler": plain(cfg.time_sampler),
        "optimizer": plain(cfg.optimizer),
        "default_run_steps": int(cfg.trainer.steps),
        "ema_decay": float(cfg.trainer.ema_decay),
    }
    return variants, settings


"""Every ratio the benchmark is for, from the variants' median steps per second.

A ratio whose variants are missing (not run in this configuration, or failed) is ``None``, with
a note saying why; the keys and their order are those of the printed list and the JSON.
"""

from __future__ import annotations

from collections.abc import Callable

from imf_exp.bench.timing import Variant


class Ratios:
    """The ratios computed so far (``values``) and why some are missing (``notes``)."""

    def __init__(self, by_name: dict[str, Variant]) -> None:
        self.by_name = by_name
        self.values: dict[str, float | None] = {}
        self.notes: dict[str, str] = {}

    def sps(self, name: str | None) -> float:
        """The median steps/s of ``name``; LookupError (the note) where there is none."""
        if name is None:
            raise LookupError("not measured in this run")
        v = self.by_name.get(name)
        if v is None or v.error or not v.round_seconds:
            raise LookupError(f"{name}: " + (v.error if v is not None and v.error else "not run"))
        return v.median_steps_per_s

    def compile_s(self, config: str) -> float:
        self.sps(f"{config}/imf_compiled")
        return self.by_name[f"{config}/imf_compiled"].compile_s

    def put(self, key: str, fn: Callable[[], float]) -> None:
        try:
            self.values[key] = fn()
        except LookupError as err:
            self.values[key], self.notes[key] = None, str(err)


def compute_ratios(by_name: dict[str, Variant], settings: dict, batch_sizes: list[int]
                   ) -> tuple[dict, dict]:
    """``(ratios, notes)``: every ratio the benchmark is for; ``None`` (with a note) where a
    variant is missing."""
    r = Ratios(by_name)
    speedups(r)
    objective_costs(r)
    batch_scaling(r, settings["c"]["sweep"], batch_sizes)
    compile_economics(r, settings["default_run_steps"])
    return r.values, r.notes


def speedups(r: Ratios) -> None:
    """Against the baseline, of the opt-in speed settings, of our compile options."""
    sps = r.sps
    r.put("a: imf_compiled / baseline steps/s", lambda: sps("a/imf_compiled") / sps("a/baseline"))
    r.put("a: imf_eager / baseline steps/s", lambda: sps("a/imf_eager") / sps("a/baseline"))
    r.put("a: imf_fast / baseline steps/s", lambda: sps("a/imf_fast") / sps("a/baseline"))
    r.put("b: imf_fast / imf_compiled steps/s", lambda: sps("b/imf_fast") / sps("b/imf_compiled"))
    for cfg in ("a", "b"):
        r.put(f"{cfg}: imf_compiled / imf_plain_compiled steps/s (zero-matmul pass, C++ wrapper)",
              lambda c=cfg: sps(f"{c}/imf_compiled") / sps(f"{c}/imf_plain_compiled"))


def objective_costs(r: Ratios) -> None:
    """What the iMF (and MeanFlow) step costs over a flow-matching (an iMF) step."""
    sps = r.sps
    for cfg in ("a", "b"):
        for mode in ("eager", "compiled"):
            r.put(f"{cfg}: imf / flow_matching step cost, {mode}",
                  lambda c=cfg, m=mode: sps(f"{c}/flow_matching_{m}") / sps(f"{c}/imf_{m}"))
    r.put("a: meanflow / imf_eager step cost", lambda: sps("a/imf_eager") / sps("a/meanflow"))


def batch_scaling(r: Ratios, sweep: list[dict], batch_sizes: list[int]) -> None:
    """The sweep (c): samples/s at a large batch over a small one, and the fixed cost behind it."""
    hi = 4096 if 4096 in batch_sizes else max(batch_sizes)
    lo = 256 if 256 in batch_sizes and 256 < hi else min(batch_sizes)
    name_of = {(s["batch"], s["kind"]): s["variant"] for s in sweep}
    for mode in ("eager", "compiled"):
        def sps_at(batch, m=mode):
            return r.sps(name_of.get((batch, f"imf_{m}")))

        def scaling():
            return sps_at(hi) * hi / (sps_at(lo) * lo)

        def fixed_share():
            """``T(B) = fixed + B * per_sample`` through both batch sizes: the fixed part's
            share of the small batch's step. The samples/s ratio is ``k / (k - (k - 1) share)``
            with ``k = hi / lo``, so a ratio >= 8 at k = 16 needs a share >= 14/15."""
            t_hi, t_lo = 1 / sps_at(hi), 1 / sps_at(lo)
            per_sample = (t_hi - t_lo) / (hi - lo)
            return (t_lo - lo * per_sample) / t_lo

        r.put(f"c: imf_{mode} samples/s b{hi} / b{lo}", scaling)
        if hi > lo:
            r.put(f"c: imf_{mode} fixed-cost share of a b{lo} step (linear fit)", fixed_share)


def compile_economics(r: Ratios, n: int) -> None:
    """Whether compiling pays over the default run's ``n`` steps, in (b) then (a)."""
    for cfg in ("b", "a"):
        def saved(c=cfg):
            return n * (1 / r.sps(f"{c}/imf_eager") - 1 / r.sps(f"{c}/imf_compiled"))

        def break_even(c=cfg):
            if saved(c) <= 0:
                raise LookupError("the compiled step is not faster: compilation never pays")
            return r.compile_s(c) * n / saved(c)

        r.put(f"{cfg}: imf compile seconds", lambda c=cfg: r.compile_s(c))
        r.put(f"{cfg}: imf seconds saved by compile over {n} steps", saved)
        r.put(f"{cfg}: imf compile payoff (saved / compile seconds)",
              lambda c=cfg: saved(c) / max(r.compile_s(c), 1e-9))
        r.put(f"{cfg}: imf compile break-even steps", break_even)

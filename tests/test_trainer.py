"""The training step and loop: batches, one step, the data generator on resume."""

import os

import pytest
import torch

from tests.conftest import compose_cfg


def test_data_pool_hands_out_one_big_draw_in_order():
    from imf_exp.data import Moons
    from imf_exp.objectives.guidance import CFG
    from imf_exp.time_samplers import UniformTimeSampler
    from imf_exp.trainer import BatchStream, draw_batch

    ds, ts = Moons(mean=[0.0, 0.0], std=[1.0, 1.0]), UniformTimeSampler()
    guidance = CFG()
    guidance.check_dataset(2, "Moons")
    stream = BatchStream(ds, ts, 8, torch.Generator().manual_seed(3), guidance, pool=4)
    got = [next(stream) for _ in range(4)]
    whole = draw_batch(ds, ts, 32, torch.Generator().manual_seed(3), guidance)
    for i in range(4):  # x, e, r, t
        assert torch.equal(torch.cat([b[i] for b in got]), whole[i])
    assert torch.equal(torch.cat([b[4].omega for b in got]), whole[4].omega)
    assert all(b[0]._base is None for b in got)  # clones, not views of the big draw
    assert len(stream.state_dict()) == 0
    next(stream)
    assert len(stream.state_dict()) == 3


TINY = ["trainer.steps=40", "trainer.batch_size=32", "model.width=16", "model.depth=1",
        "eval.n=50", "eval.floor_repeats=1", "eval.nfe=[1]", "trainer.eval_every=0",
        "trainer.checkpoint_every=20", "trainer.log_every=10", "trainer.progress=false"]


class MemoryStore:
    """A run folder in memory: what fit hands over."""

    def __init__(self):
        self.checkpoints, self.samples = [], {}

    def save_checkpoint(self, state):
        import copy

        self.checkpoints.append(copy.deepcopy(state))

    def save_samples(self, name, standardized, native):
        self.samples[name] = (standardized, native)


def fit(overrides=(), resume_state=None):
    from imf_exp.build import build
    from imf_exp.config import to_dict
    from imf_exp.devices import select_device
    from imf_exp.trainer import Trainer

    cfg = compose_cfg([*TINY, *overrides])
    parts = build(cfg)
    trainer = Trainer(**cfg.trainer, device=select_device("cpu"), seed=cfg.seed, config=to_dict(cfg))
    store = MemoryStore()
    result = trainer.fit(parts, parts.evaluator(cfg.eval), store, resume_state)
    return result, store, parts


def test_fit_hands_checkpoints_and_samples_to_its_store():
    """fit writes no file: checkpoints every checkpoint_every steps and the evaluation samples
    (both coordinates) go to the store; the result carries the final metrics and history."""
    result, store, parts = fit()
    assert [c["step"] for c in store.checkpoints] == [20, 40]
    assert list(store.samples) == ["step0000040_nfe1"]
    std, native = store.samples["step0000040_nfe1"]
    assert torch.allclose(parts.dataset.destandardize(std.double()), native)
    assert [h["step"] for h in result.progress.history] == [10, 20, 30, 40]
    assert set(result.final) >= {"nfe1/w2_ratio", "w2_floor"} and result.progress.step == 40
    # a checkpoint's RNG state names its generator's device and holds no CUDA state list
    rng = store.checkpoints[-1]["rng"]
    assert rng["data_device"] == "cpu" and "cuda" not in rng


def test_resume_from_a_checkpoint_equals_the_uninterrupted_fit():
    full, store, _ = fit()
    resumed, _, _ = fit(resume_state=store.checkpoints[0])
    for k, v in full.ema.state_dict().items():
        assert torch.equal(v, resumed.ema.state_dict()[k]), k
    assert resumed.final == full.final


def test_resume_on_another_device_type_reseeds_the_data_stream(caplog):
    """A checkpoint whose data generator lived on another device type (a CPU run resumed on a GPU
    host, or back) cannot continue that generator: the run goes on with a generator reseeded
    from (seed, step), says so, and ends with other weights than the uninterrupted run."""
    full, store, _ = fit()
    state = dict(store.checkpoints[0])
    state["rng"] = {**state["rng"], "data_device": "cuda", "data": torch.zeros(16, dtype=torch.uint8)}
    with caplog.at_level("WARNING"):
        resumed, _, _ = fit(resume_state=state)
    assert "the data stream is reseeded" in caplog.text
    assert resumed.progress.step == 40
    assert any(not torch.equal(v, resumed.ema.state_dict()[k]) for k, v in full.ema.state_dict().items())


def test_train_step_halves_equal_the_whole_step():
    """``backward`` + ``apply`` is ``step``: the benchmark and the loop time the same work."""
    from imf_exp.build import build
    from imf_exp.trainer import BatchStream, TrainStep

    steps = []
    for split in (False, True):
        cfg = compose_cfg(TINY)
        parts = build(cfg)
        step = TrainStep(parts.model, parts.objective, parts.boundary, parts.optimizer, 10,
                         torch.device("cpu"))
        stream = BatchStream(parts.dataset, parts.time_sampler, 32, torch.Generator().manual_seed(0))
        for k in range(3):
            batch = next(stream)
            if split:
                step.backward(batch)
                step.apply(k)
            else:
                step.step(batch, k)
        steps.append(step)
    for (k, a), b in zip(steps[0].ema.state_dict().items(), steps[1].ema.state_dict().values()):
        assert torch.equal(a, b), k
    assert steps[0].sched.last_epoch == 3


def test_standardization_statistics_are_copied_once_per_device_and_dtype():
    """standardize reuses the statistics it copied for (device, dtype): a step never copies them
    from the host again (on CUDA such a copy would synchronize the stream)."""
    from imf_exp.data import Circles

    ds = Circles()
    x = torch.randn(8, 2)
    first = ds.statistics(x.device, x.dtype)
    ds.standardize(x)
    ds.destandardize(x)
    assert ds.statistics(x.device, x.dtype)[0] is first[0] and len(ds._stats) == 1
    ds.standardize(x.double())
    assert len(ds._stats) == 2
    assert torch.allclose(ds.destandardize(ds.standardize(x)), x, atol=1e-6)


@pytest.mark.parametrize("mode,steps,expected", [("on", 10, True), ("off", 10**6, False),
                                                 ("auto", 1999, False), ("auto", 2000, True)])
def test_compile_decision_on_a_cpu(mode, steps, expected):
    from imf_exp.trainer import compile_decision

    assert compile_decision(mode, torch.device("cpu"), steps) is expected


def test_the_interval_time_waits_for_the_device(monkeypatch):
    """steps_per_s and train_seconds are read after the device's queued work is done: the loop
    synchronizes the device at every log interval (and only there, never per step)."""
    import imf_exp.trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "synchronize", lambda device: calls.append(device.type))
    result, _, _ = fit()
    assert len(calls) == len(result.progress.history) == 4 and set(calls) == {"cpu"}


def test_an_unconditional_query_of_a_guided_model_reads_nothing_back_from_the_device(monkeypatch):
    """A guided model asked without a condition (figures, the ODE's unconditional velocity) builds
    the null condition on the device: no ``.item()`` or ``bool()`` of a tensor (each a host sync
    on CUDA)."""
    from imf_exp.condition import Condition
    from imf_exp.models import MLP

    model = MLP(2, width=8, depth=1, embedding_dim=4, num_classes=3)
    z, r, t = torch.randn(5, 2), torch.zeros(5), torch.ones(5)
    expected = model(z, r, t, Condition.build(torch.full((5,), 3), 1.0))

    def no_sync(*args):
        raise AssertionError("a tensor was read back on the host")

    monkeypatch.setattr(torch.Tensor, "item", no_sync)
    monkeypatch.setattr(torch.Tensor, "__bool__", no_sync)
    with torch.no_grad():
        assert torch.equal(model(z, r, t), expected.detach())
        Condition.build(torch.full((5,), 1), 2.0, (0.2, 0.8))  # a float omega: checked on the host


def test_cpu_threads_follow_the_request_then_the_environment_then_the_load(monkeypatch):
    from imf_exp import devices
    from imf_exp.devices import cpu_threads

    assert cpu_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads(None) == torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("time.sleep", lambda s: None)
    for busy, expected in ((0.0, 2), (0.3, 2), (0.6, 1), (1.0, 1), (2.0, 1)):
        # /proc/stat's idle and total jiffies before and after the window: busy CPUs of 2
        def stat(busy=busy, calls=[0]):  # noqa: B006 - the call counter
            calls[0] += 1
            return (1000.0, 5000.0) if calls[0] % 2 else (1000.0 + 200 * (1 - busy / 2), 5200.0)

        monkeypatch.setattr(devices, "_cpu_times", stat)
        assert devices.busy_cpus() == pytest.approx(busy)
        assert cpu_threads(None) == expected, busy
    monkeypatch.setattr(devices, "_cpu_times", lambda: None)  # no /proc/stat: the load average
    for load, expected in ((0.1, 2), (1.0, 1), (1.6, 1), (5.0, 1)):
        monkeypatch.setattr("os.getloadavg", lambda load=load: (load, load, load))
        assert cpu_threads(None) == expected, load


def test_busy_cpus_reads_this_machine():
    from imf_exp import devices

    assert devices._cpu_times() is None or 0 <= devices.busy_cpus(0.05) <= (os.cpu_count() or 1)

"""The compile pass changes no result: the zero-matmul pass and the C++ wrapper are exact
(bitwise); the compiled loss equals the eager one."""

import pytest
import torch

from imf_exp.compile import DropZeroMatmuls, compile_loss, own_code
from imf_exp.models import MLP
from tests.helpers import imf_loss_case

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


@pytest.fixture
def no_compile_cache():
    """Compile for real (the pass only runs, and counts, when nothing comes from the caches)."""
    with torch._inductor.config.patch(fx_graph_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        yield


def test_pass_drops_matmuls_with_a_zero_operand_and_keeps_the_rest(no_compile_cache):
    """``addmm(c, x, 0) -> c`` and ``x @ 0 -> 0``; a matmul with a non-zero operand stays."""
    zero_pass = DropZeroMatmuls()

    def f(x, c, w):
        zeros = torch.zeros(3, 4).expand(3, 4)
        return torch.addmm(c, x, zeros), x @ torch.zeros(3, 2), torch.addmm(c, x, w)

    x, c, w = torch.randn(5, 3), torch.randn(5, 4), torch.randn(3, 4)
    got = compile_loss(own_code(f, "zero_pass"), zero_pass, dynamic=False)(x, c, w)
    assert zero_pass.removed == 2
    assert torch.equal(got[0], c) and torch.equal(got[1], torch.zeros(5, 2))
    torch.testing.assert_close(got[2], torch.addmm(c, x, w))


def test_pass_leaves_dynamic_shapes_alone(no_compile_cache):
    """With symbolic sizes the pass rewrites nothing (its replacement needs concrete shapes), and
    the compiled function still runs and is right at two batch sizes."""
    zero_pass = DropZeroMatmuls()

    def f(x):
        return x @ torch.zeros(x.shape[1], 2) + 1

    fn = compile_loss(own_code(f, "zero_pass_dynamic"), zero_pass, dynamic=True)
    for n in (5, 7):
        assert torch.equal(fn(torch.randn(n, 3)), torch.ones(n, 2))
    assert zero_pass.removed == 0


def test_compiled_imf_loss_is_bitwise_the_same_with_and_without_the_pass(no_compile_cache):
    """On the iMF loss the pass finds one zero-tangent matmul per linear layer (the parameters'
    materialized zero tangents in the JVP) and removes them; with the C++ wrapper as well, not a
    bit of the loss or of the gradients changes against a plain ``torch.compile``."""
    torch.manual_seed(0)
    loss_fn, loss_and_grads = imf_loss_case(MLP(2, width=16, depth=2, embedding_dim=8))

    zero_pass = DropZeroMatmuls()
    with_pass = loss_and_grads(compile_loss(own_code(loss_fn, "with_pass"), zero_pass, dynamic=False))
    without = loss_and_grads(torch.compile(own_code(loss_fn, "without_pass"), dynamic=False))
    assert zero_pass.removed == 3  # two hidden layers and the output head
    assert torch.equal(with_pass[0], without[0])
    assert all(torch.equal(a, b) for a, b in zip(with_pass[1], without[1], strict=True))

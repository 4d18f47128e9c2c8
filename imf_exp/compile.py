"""``torch.compile`` of the loss, with one graph pass of our own.

Forward-mode AD traced by AOTAutograd gives every parameter a *materialized* zero tangent:
the JVP of ``x @ W.T + b`` along ``(dx, dW = 0)`` is lowered to
``addmm(dx @ W.T, x, expand(zeros))``, one extra matmul per linear layer whose result is exactly
zero (eager forward AD skips it; the compiled graph pays for it, about a sixth of the step's
matmuls for a 3-layer MLP). :class:`DropZeroMatmuls` removes every ``mm`` / ``addmm`` whose
matrix operand is a zero constant (a ``full(.., 0)`` / ``zeros`` seen through views, copies
and sums of zeros): ``mm(x, 0) -> zeros``, ``addmm(c, x, 0) -> c``. The results are bitwise
the same (``c + x @ 0 == c`` for finite ``x``; where ``x`` holds inf or NaN the dropped product
would have been NaN, but such a step already fails the trainer's finiteness check on ``u``).
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

aten = torch.ops.aten

#: ops through which a zero stays a zero (views, copies, layout changes)
_ZERO_PRESERVING = {aten.expand.default, aten.view.default, aten.reshape.default,
                    aten.permute.default, aten.t.default, aten.clone.default,
                    aten._to_copy.default, aten.alias.default, aten.unsqueeze.default,
                    aten.squeeze.dim, aten.transpose.int}


def _is_zero(node, memo: dict) -> bool:
    """Whether an FX node (or a Python scalar) is a tensor of zeros by construction."""
    if not isinstance(node, torch.fx.Node):
        return isinstance(node, (int, float)) and node == 0
    if node.op != "call_function":
        return False
    if node not in memo:
        memo[node] = False  # cycles cannot occur in an FX graph; this only guards recursion
        target, args = node.target, node.args
        if target is aten.full.default:
            zero = node.kwargs.get("fill_value", args[1] if len(args) > 1 else None) == 0
        elif target in (aten.zeros.default, aten.zeros_like.default, aten.new_zeros.default):
            zero = True
        elif target is aten.scalar_tensor.default:
            zero = args[0] == 0
        elif target in _ZERO_PRESERVING:
            zero = _is_zero(args[0], memo)
        elif target in (aten.add.Tensor, aten.sub.Tensor):
            zero = _is_zero(args[0], memo) and _is_zero(args[1], memo)
        else:
            zero = False
        memo[node] = zero
    return memo[node]


class DropZeroMatmuls(CustomGraphPass):
    """Inductor post-grad pass: matmuls with a zero operand are replaced by what they equal.
    ``removed`` counts the matmuls dropped by this instance (over every graph it saw)."""

    def __init__(self) -> None:
        self.removed = 0

    def __call__(self, graph: torch.fx.Graph) -> None:
        memo: dict = {}
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target not in (aten.mm.default, aten.addmm.default):
                continue
            val = node.meta.get("val")
            if val is None or not all(isinstance(d, int) for d in val.shape):
                continue  # dynamic shapes: left alone (the replacement needs concrete sizes)
            if node.target is aten.mm.default and any(_is_zero(a, memo) for a in node.args[:2]):
                with graph.inserting_before(node):
                    new = graph.call_function(aten.full.default, (list(val.shape), 0.0),
                                              {"dtype": val.dtype, "device": val.device})
            elif (node.target is aten.addmm.default and node.kwargs.get("beta", 1) == 1
                  and any(_is_zero(a, memo) for a in node.args[1:3])):
                bias = node.args[0]
                with graph.inserting_before(node):
                    expanded = graph.call_function(aten.expand.default, (bias, list(val.shape)))
                    expanded.meta["val"] = bias.meta["val"].expand(val.shape)
                    new = graph.call_function(aten.clone.default, (expanded,),
                                              {"memory_format": torch.contiguous_format})
            else:
                continue
            new.meta.update(node.meta)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            self.removed += 1
        graph.eliminate_dead_code()

    def uuid(self) -> bytes:  # part of inductor's cache key: changes with this file
        return get_hash_for_files((__file__,))


def cpu_options(device: torch.device | str | None) -> dict:
    """Inductor options for a CPU graph: ``cpp_wrapper`` (the compiled graph's wrapper, which
    allocates buffers and calls the kernels, is generated as C++ instead of Python). Same
    kernels, so the same numbers (tested); on small graphs it removes a good part of the
    per-call overhead, and it compiles no slower on this machine. Not used on CUDA (untested)."""
    return {"cpp_wrapper": True} if device is None or torch.device(device).type == "cpu" else {}


def compile_loss(fn: Callable, zero_matmul_pass: DropZeroMatmuls | None = None,
                 device: torch.device | str | None = None, **kwargs) -> Callable:
    """``torch.compile(fn, **kwargs)`` with :class:`DropZeroMatmuls` in inductor's post-grad
    passes (a fresh one unless ``zero_matmul_pass`` is given, e.g. to read its count) and, for
    ``device`` CPU (or None), :func:`cpu_options`."""
    options = {**cpu_options(device), **(kwargs.pop("options", None) or {})}
    options["post_grad_custom_pre_pass"] = zero_matmul_pass or DropZeroMatmuls()
    return torch.compile(fn, options=options, **kwargs)


def own_code(fn: Callable, tag: str) -> Callable:
    """A copy of ``fn`` with its own code object. Dynamo keeps its compiled graphs per code
    object, so without this every closure made by one ``def`` would share one cache (and its
    recompile limit, and automatic dynamic shapes after the second batch size)."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{re.sub(r'[^0-9a-zA-Z_]', '_', tag)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)

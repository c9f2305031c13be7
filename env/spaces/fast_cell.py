"""The ENAS cell unrolled at close to the cost of its arithmetic: one compiled loop for every cell of a space.

A search trains hundreds of different cells, so nothing here is specialised to one: the loops take the cell as
int lists (each node's source, each node's activation code, the loose ends) and are scripted once per process, on
first use, for all of them. Autograd would record a dozen small operations per node and step and replay them one
by one; :class:`FastCell` instead runs the forward without recording (keeping the node states and each node's
gate and activated candidate, in the buffer its matrix product wrote) and a backward written by hand:

- everything is kept transposed, (hidden, batch), so that a node's gate and candidate are the contiguous halves
  of one product ``W h`` and every elementwise operation runs on contiguous memory;
- at each step the local derivatives of all nodes (gate, candidate, highway) are computed at once where the
  formula allows, then per node one multiply, one accumulation and one matrix product pass the gradient back;
- each weight's gradient is one batched product over all time steps (the states a node read against the
  gradients of its pre-activations), instead of one accumulation per step.

The state clip (``h`` scaled down to norm ``max_norm`` where bigger) is applied to every step unconditionally,
which computes what ``if norms.max() > max_norm`` computes without a device-to-host synchronisation per step.

TorchScript is deprecated in recent torch; where ``torch.jit.script`` is gone or fails, the same functions run
as plain Python (about twice slower, same results). ``torch.compile`` is not used: it would specialise on each
cell, and a search's cells are all different.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import once_differentiable

# The activations a node may choose, by code (the order of the loops' branches below).
ACTIVATION_CODES: dict[str, int] = {"tanh": 0, "relu": 1, "identity": 2, "sigmoid": 3}


def _activate_(x: torch.Tensor, code: int) -> torch.Tensor:
    """Activation ``code`` of ``x``, in place: the forward keeps it where the pre-activation was, for the backward."""
    if code == 0:
        return x.tanh_()
    if code == 1:
        return x.relu_()
    if code == 3:
        return x.sigmoid_()
    return x


def _activation_slope_into(out: torch.Tensor, f: torch.Tensor, code: int) -> torch.Tensor:
    """``out`` = the activation's derivative where it output ``f`` (from the output, as torch's own backward does)."""
    if code == 0:
        return torch.mul(f, f, out=out).neg_().add_(1.0)
    if code == 1:
        return torch.gt(f, 0.0, out=out)
    if code == 3:
        return torch.mul(f, -1.0, out=out).add_(1.0).mul_(f)
    return out.fill_(1.0)


def _mixing_row(loose_ends: list[int], count: int, like: torch.Tensor) -> torch.Tensor:
    """(1, node + 1): 1 / (number of loose ends) at each loose end (index l + 1), 0 elsewhere."""
    mix = like.new_zeros(1, count + 1)
    for end in loose_ends:
        mix[0, end + 1] = 1.0 / len(loose_ends)
    return mix


def cell_forward(
    projected: torch.Tensor,
    h0: torch.Tensor,
    weights: list[torch.Tensor],
    sources: list[int],
    codes: list[int],
    loose_ends: list[int],
    max_norm: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cell over a sequence, without autograd. Everything is kept transposed, (hidden, batch), so that a node's
    gate and candidate are the two contiguous halves of its product ``W h``. Returns the states ``(time + 1,
    node + 1, hidden, batch)``: ``[t, 0]`` is h_{t-1} (``[time, 0]`` the last state), ``[t, l + 1]`` node l at
    step t; each node's gate and activated candidate ``[c; f]`` ``(time, node, 2 hidden, batch)``; and the norms of
    the states before the clip ``(time, 1, batch)``. ``weights[l]`` is (2 hidden, hidden), ``projected`` (time,
    2 hidden, batch)."""
    steps, batch, hidden = projected.shape[0], projected.shape[2], h0.shape[0]
    count = len(sources)
    states = projected.new_empty(steps + 1, count + 1, hidden, batch)
    states[0, 0].copy_(h0)
    acts = projected.new_empty(steps, count, 2 * hidden, batch)
    norms = projected.new_empty(steps, 1, batch)
    mix = _mixing_row(loose_ends, count, projected)
    for t in range(steps):
        state = states[t]
        for node in range(count):
            prev = state[sources[node] + 1]  # source -1 is h_{t-1}, at [t, 0]
            a = acts[t, node]
            if sources[node] < 0:
                torch.addmm(projected[t], weights[node], prev, out=a)
            else:
                torch.mm(weights[node], prev, out=a)
            gate = a[:hidden].sigmoid_()
            torch.lerp(prev, _activate_(a[hidden:], codes[node]), gate, out=state[node + 1])  # c f + (1 - c) prev
        if len(loose_ends) == 1:
            raw = state[loose_ends[0] + 1]
        else:  # the mean of the loose ends as one product (a reduction over the node dimension is slower)
            raw = torch.mm(mix, state.view(count + 1, -1)).view(hidden, batch)
        norm = torch.linalg.vector_norm(raw, dim=0, keepdim=True, out=norms[t])
        torch.mul(raw, torch.clamp(max_norm / norm, max=1.0), out=states[t + 1, 0])
    return states, acts, norms


def cell_backward(
    grad_outputs: torch.Tensor,
    grad_h: torch.Tensor,
    weights: list[torch.Tensor],
    sources: list[int],
    codes: list[int],
    loose_ends: list[int],
    max_norm: float,
    states: torch.Tensor,
    acts: torch.Tensor,
    norms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The gradients of :func:`cell_forward`'s inputs (projected input, ``h0``, each weight, all transposed as
    there) from those of its outputs (``grad_outputs`` (time, hidden, batch) and the last state's ``grad_h``)."""
    steps, count, hidden, batch = acts.shape[0], acts.shape[1], states.shape[2], states.shape[3]
    index = torch.tensor([s + 1 for s in sources], dtype=torch.long, device=states.device)
    mix = _mixing_row(loose_ends, count, states)
    # the clip h = raw s, s = min(1, max_norm / |raw|): d raw = s g - raw (max_norm / |raw|^3) (g . raw)
    scale = torch.clamp(max_norm / norms, max=1.0)
    bend = torch.where(norms > max_norm, max_norm / norms.pow(3), torch.zeros_like(norms))
    transposed = [w.t() for w in weights]
    factors = acts.new_empty(count, 2, hidden, batch)
    grad_pre = acts.new_empty(steps, count, 2 * hidden, batch)
    grads = states.new_zeros(count + 1, hidden, batch)  # [0]: h_{t-1}, [l + 1]: node l
    g = grad_outputs[steps - 1] + grad_h
    for t in range(steps - 1, -1, -1):
        state = states[t]
        if len(loose_ends) == 1:
            raw = state[loose_ends[0] + 1]
        else:
            raw = torch.mm(mix, state.view(count + 1, -1)).view(hidden, batch)
        dot = (g * raw).sum(0, keepdim=True)
        g_raw = torch.addcmul(g * scale[t], raw, bend[t] * dot, value=-1.0)
        # the loose ends' share of it, and zero for every other node and for h_{t-1}, in one product
        torch.mm(mix.t(), g_raw.view(1, -1), out=grads.view(count + 1, -1))
        # every node's local derivatives at this step, for all nodes at once where the formula allows:
        # d h / d pre = [(f - prev) c (1 - c), c f'] = [(h - prev) (1 - c), c f'] and d h / d prev = 1 - c
        gates, outs = acts[t, :, :hidden], acts[t, :, hidden:]
        keep = 1.0 - gates
        torch.sub(state[1:], state.index_select(0, index), out=factors[:, 0]).mul_(keep)
        for node in range(count):
            _activation_slope_into(factors[node, 1], outs[node], codes[node])
        factors[:, 1].mul_(gates)
        for node in range(count - 1, -1, -1):
            g_node = grads[node + 1]
            d = torch.mul(factors[node], g_node, out=grad_pre[t, node].view(2, hidden, batch))
            into = grads[sources[node] + 1]
            into.addcmul_(g_node, keep[node])
            into.addmm_(transposed[node], d.view(2 * hidden, batch))
        if t > 0:
            g = grad_outputs[t - 1] + grads[0]
    # each weight's gradient: one product summed over all steps (the node's input against its pre-activations')
    grad_weights = [
        torch.addbmm(
            weights[node].new_zeros(2 * hidden, hidden),
            grad_pre[:, node],
            states[:steps, sources[node] + 1].transpose(1, 2),
        )
        for node in range(count)
    ]
    return grad_pre[:, 0], grads[0].clone(), grad_weights


_scripted: dict[str, Callable[..., Any]] = {}


def _compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` scripted, once per process and on first use (about a second, paid by the first cell only), or
    the plain Python function where TorchScript is unavailable."""
    name = function.__name__
    if name not in _scripted:
        try:
            with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; the fallback covers its removal
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                _scripted[name] = torch.jit.script(function)
        except Exception as error:  # noqa: BLE001 - any failure to script leaves the (identical) Python loop
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            warnings.warn(f"the fast recurrent cell runs as plain Python: TorchScript failed ({reason})", stacklevel=2)
            _scripted[name] = function
    return _scripted[name]


class FastCell(torch.autograd.Function):
    """:func:`cell_forward` and :func:`cell_backward` as one differentiable operation (first derivatives only), on
    tensors in the usual layout: ``projected`` (time, batch, 2 hidden), ``h0`` (batch, hidden), and each weight as
    the (hidden, 2 hidden) map of a state to its node's [gate, candidate]."""

    @staticmethod
    def forward(
        ctx: Any,
        projected: torch.Tensor,
        h0: torch.Tensor,
        sources: list[int],
        codes: list[int],
        loose_ends: list[int],
        max_norm: float,
        *weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        forward = _compiled(cell_forward)
        transposed = [w.t() for w in weights]
        states, acts, norms = forward(
            projected.transpose(1, 2).contiguous(), h0.t(), transposed, sources, codes, loose_ends, max_norm
        )
        ctx.save_for_backward(states, acts, norms, *transposed)
        ctx.cell = (sources, codes, loose_ends, max_norm)
        return states[1:, 0].transpose(1, 2).contiguous(), states[-1, 0].t().contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_outputs: torch.Tensor, grad_h: torch.Tensor) -> tuple[Any, ...]:
        backward = _compiled(cell_backward)
        states, acts, norms, *transposed = ctx.saved_tensors
        sources, codes, loose_ends, max_norm = ctx.cell
        grad_projected, grad_h0, grad_weights = backward(
            grad_outputs.transpose(1, 2).contiguous(), grad_h.t().contiguous(), transposed, sources, codes,
            loose_ends, max_norm, states, acts, norms,
        )  # fmt: skip
        weight_grads = [g.t() for g in grad_weights]
        return grad_projected.transpose(1, 2), grad_h0.t(), None, None, None, None, *weight_grads


def fast_unroll(
    projected: torch.Tensor,
    h0: torch.Tensor,
    weights: list[torch.Tensor],
    sources: list[int],
    activations: list[str],
    loose_ends: list[int],
    max_norm: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cell over a sequence through :class:`FastCell`: outputs (time, batch, hidden) and the last state."""
    unknown = [name for name in activations if name not in ACTIVATION_CODES]
    if unknown:
        raise ValueError(f"unknown cell activation {unknown[0]!r}; accepted are {list(ACTIVATION_CODES)}")
    codes = [ACTIVATION_CODES[name] for name in activations]
    outputs, h = FastCell.apply(projected, h0, sources, codes, loose_ends, max_norm, *weights)
    return outputs, h

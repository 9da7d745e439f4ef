"""Torch lesion engines: predicted labels of an exported program with sets of units lesioned.

Lesioning units of a layer sets the weights *into* them (``weight[units]``, for a transposed
convolution ``weight[:, units]``) and their biases to 0 (``keep_bias=True`` keeps the biases), as
in the Keras engines; the program's own ops run everything after, so a batch norm after a lesioned
convolution still adds its shift.

* :class:`ReferenceEngine` -- the definition: the program run on the data with the lesioned weights
  in place of the originals (a copy: the caller's weights are never written).
* :class:`FastEngine` -- the same labels with less work. A lesioned unit's output is a constant (its
  bias, or 0) whatever the input, so the program is run once up to the lesioned layer's output (the
  values the rest of the graph reads are cached per layer, under a byte budget), lesions become masks
  on that output, and many variants are stacked along the batch axis through the rest of the graph
  in one call (``torch.inference_mode``). Where the layer reaches the next linear or convolution L2
  only through per-channel ops (activations, batch norm, pooling, dropout), L2 is not recomputed: a
  lesion of units S changes L2's pre-activation by L2 applied to the change of those S channels only,
  one batched matrix product (linear) or grouped convolution (conv) over the S channels of every
  variant. Rows whose top-2 output margin is within ``_SCREEN_TOL`` are recomputed through the plain
  path; equal unit sets are run once. ``torch.compile`` is not used (a compile per layer and variant
  shape, and no triton in a process that imported TensorFlow first); its payoff is not measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modtest.errors import InvalidInput
from modtest.frameworks.base import ENGINES, DistinctUnitSets, PrefixCache, choose_engine
from modtest.frameworks.torch.runtime import import_torch

__all__ = ["ReferenceEngine", "FastEngine", "make_engine", "ENGINES"]

#: rows whose top-2 output margin is below this (relative to the top value) are recomputed exactly
_SCREEN_TOL = 1e-4
#: node kinds that act on each channel separately (the incremental path may pass through them)
_PER_CHANNEL = ("elementwise", "bn", "spatial", "getitem")


def _check_units(units, width: int, layer: str) -> np.ndarray:
    u = np.asarray(units, dtype=np.int64).ravel()
    if u.size and (u.min() < 0 or u.max() >= width):
        raise InvalidInput(f"unit indices of layer {layer!r} must lie in [0, {width - 1}], "
                           f"got {int(u.min())}..{int(u.max())}")
    return u


def _unit_mask(unit_sets, width: int, rows: int) -> np.ndarray:
    """bool (rows, width): row i is True at the units of ``unit_sets[i]``; rows past them stay False."""
    mask = np.zeros((rows, width), dtype=bool)
    for i, units in enumerate(unit_sets):
        mask[i, np.asarray(units, dtype=np.int64)] = True
    return mask


class ReferenceEngine:
    """The definition of a lesion: the program on the data with lesioned copies of the weights.

    Parameters
    ----------
    program : :class:`modtest.frameworks.torch.program.Program`
    x : ndarray, shape (N, ...), inputs in the program's layout
    keep_bias : bool, keep the biases of lesioned units
    batch_size : int, examples per call
    """

    name = "reference"

    def __init__(self, program, x, *, keep_bias: bool = False, batch_size: int = 1024):
        torch = import_torch()
        self.program = program
        self.x = x
        self.keep_bias = bool(keep_bias)
        self.batch_size = int(batch_size)
        self._x = torch.as_tensor(np.asarray(x)).to(device=program.device, dtype=program.input_dtype)
        self._base = None

    def _unit(self, layer: str):
        unit = self.program.units.get(layer)
        if unit is None:
            raise InvalidInput(f"model has no unit layer named {layer!r}; unit layers: "
                               f"{', '.join(list(self.program.units)[:8])}")
        return unit

    def overrides(self, lesions) -> dict:
        """Placeholder name -> lesioned copy of the weight (and bias) for ``lesions`` [(layer, units)]."""
        torch = import_torch()
        out = {}
        for layer, units in lesions:
            unit = self._unit(layer)
            u = _check_units(units, unit.width, layer)
            w = out.get(unit.weight, self.program.weights[unit.weight]).clone()
            _zero_units(w, unit, u)
            out[unit.weight] = w
            u = torch.as_tensor(u, device=w.device)
            if unit.bias is not None and not self.keep_bias:
                b = out.get(unit.bias, self.program.weights[unit.bias]).clone()
                b.index_fill_(0, u, 0)
                out[unit.bias] = b
        return out

    def _predict_labels(self, overrides=None, x=None) -> np.ndarray:
        torch = import_torch()
        x = self._x if x is None else x
        out = []
        with torch.inference_mode():
            for lo in range(0, len(x), self.batch_size):
                logits = self.program.forward(x[lo:lo + self.batch_size], overrides)[0]
                out.append(logits.reshape(len(logits), -1).argmax(dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def base_labels(self) -> np.ndarray:
        """Predicted labels of the intact program, shape (N,)."""
        if self._base is None:
            self._base = self._predict_labels()
        return self._base

    def labels(self, layer: str, unit_sets, fixed=(), on_progress=None) -> np.ndarray:
        """Predicted labels (V, N) with each unit set of ``layer`` lesioned in turn (and every
        ``(layer, units)`` of ``fixed`` in every variant)."""
        self._unit(layer)
        out = np.empty((len(unit_sets), len(self.x)), dtype=np.int64)
        for i, units in enumerate(unit_sets):
            out[i] = self._predict_labels(self.overrides(list(fixed) + [(layer, units)]))
            if on_progress is not None:
                on_progress(1)
        return out


@dataclass
class _Plan:
    """How the fast engine runs the variants of one layer."""

    unit: object  # the lesioned UnitOp
    prefix: list  # steps computing the captured values
    capture: list  # nodes the suffix reads: the layer's output first, then side values
    suffix: list  # steps after the layer (or after L2 on the incremental path)
    tiled: set  # captured data nodes repeated for every variant
    axis: int  # the unit axis of the layer's output
    chain: list | None = None  # incremental path: per-channel steps between the layer and L2
    l2: object = None  # incremental path: L2's UnitOp
    plain_suffix: list | None = None  # the plain path's suffix (near-tie rows of the incremental path)
    max_elements: int = 1  # largest per-example tensor of the suffix (values)


class FastEngine(DistinctUnitSets, PrefixCache, ReferenceEngine):
    """Same labels as :class:`ReferenceEngine`: cached prefixes, masked outputs, stacked variants.

    ``max_elements`` bounds the values of one stacked tensor; ``cache_bytes`` the cached prefix
    values (an LRU over layers: a layer whose values for all examples do not fit is streamed in blocks
    of examples and not cached). ``peak_cached_bytes`` records the most held at once.
    """

    name = "fast"

    def __init__(self, program, x, *, keep_bias: bool = False, batch_size: int = 1024,
                 max_elements: int = 1 << 24, cache_bytes: int = 1 << 30):
        super().__init__(program, x, keep_bias=keep_bias, batch_size=batch_size)
        self.max_elements = int(max_elements)
        self._init_cache(cache_bytes)
        self._plans: dict = {}
        self.incremental = True
        #: instrumentation: variants computed on the incremental path, rows recomputed after screening
        self.stats = {"incremental": 0, "plain": 0, "screened": 0}

    # ---------------------------------------------------------------- plans
    def _plan(self, layer: str, incremental: bool):
        key = (layer, incremental)
        if key not in self._plans:
            self._plans[key] = self._make_plan(layer, incremental)
        return self._plans[key]

    def _make_plan(self, layer: str, incremental: bool):
        from modtest.frameworks.torch.spec import describe

        prog = self.program
        unit = self._unit(layer)
        node = unit.node
        down = prog.downstream([node])
        if prog.output not in down:
            return None
        info = describe(prog)
        axis = 1 if unit.kind == "conv" else len(node.meta["val"].shape) - 1
        chain, l2, start = None, None, node
        if incremental:
            chain, l2 = self._chain(node, info)
            if l2 is None:
                return False
            start = l2.node
        after = prog.downstream([start])
        suffix_nodes = [s.node for s in prog.steps if s.node in after and s.node is not start]
        side = []
        for n in suffix_nodes:
            for a in n.all_input_nodes:
                if a not in after and a.op != "placeholder" and a not in side:
                    side.append(a)
        dynamic_shapes = prog.batch_symbol is not None
        from modtest.frameworks.torch.program import _is_shape

        shape_nodes = [a for a in side if dynamic_shapes and _is_shape(a)]
        side = [a for a in side if a not in shape_nodes]
        capture = [node] + ([start] if l2 is not None else []) + [a for a in side if a is not node]
        if l2 is not None:  # near-tie rows run the plain path: capture what it reads as well
            plain = self._plan(layer, False)
            capture += [a for a in plain.capture if a not in capture]
        need = prog.upstream(capture)
        shape_steps = prog.upstream(shape_nodes, where=_is_shape)  # recomputed for the stacked batch
        suffix = prog.steps_of(set(suffix_nodes) | shape_steps)
        tiled = {a for a in capture if a in prog.data and a is not node and a is not start}
        elements = 1
        for n in suffix_nodes:
            v = n.meta.get("val")
            v = v[0] if isinstance(v, (list, tuple)) else v
            if hasattr(v, "shape") and len(v.shape) and n in prog.data:
                elements = max(elements, int(np.prod([int(d) for d in v.shape[1:]])))
        plan = _Plan(unit, prog.steps_of(need), capture, suffix, tiled, axis, max_elements=elements)
        if l2 is not None:
            plan.chain, plan.l2 = prog.steps_of(chain), l2
        return plan

    def _chain(self, node, info):
        """(per-channel nodes, L2) from ``node`` to the next unit layer, or (None, None)."""
        prog = self.program
        units = {u.node: u for u in prog.units.values()}
        chain, cur = [], node
        while True:
            users = [u for u in cur.users if u in info]
            if len(users) != 1 or len([u for u in cur.users]) != 1:
                return None, None
            nxt = users[0]
            i = info[nxt]
            if i.kind == "unit":
                l2 = units.get(nxt)
                if l2 is None or i.inputs != [cur] or l2.transposed or l2.groups != 1:
                    return None, None
                rank = len(cur.meta["val"].shape) if hasattr(cur.meta.get("val"), "shape") else 0
                if l2.kind == "dense" and rank != 2:
                    return None, None
                if l2.kind == "conv" and rank != len(prog.weights[l2.weight].shape):
                    return None, None
                return chain, l2
            if i.kind not in _PER_CHANNEL or i.inputs != [cur]:
                return None, None
            if i.kind == "spatial" and _reduces_channels(nxt):
                return None, None
            chain.append(nxt)
            cur = nxt

    # ---------------------------------------------------------------- labels
    def base_labels(self) -> np.ndarray:
        if self._base is None:
            self._base = self._predict_labels()
        return self._base

    def _labels_distinct(self, layer, unit_sets, fixed, on_progress) -> np.ndarray:
        torch = import_torch()
        unit = self._unit(layer)
        for units in unit_sets:
            _check_units(units, unit.width, layer)
        n = len(self.x)
        if any(f[0] == layer for f in fixed):
            return ReferenceEngine.labels(self, layer, unit_sets, fixed, on_progress)
        plan = self._plan(layer, True) if self.incremental else False
        if plan is False:  # no linear or convolution after per-channel ops only: the plain path
            plan = self._plan(layer, False)
        if plan is None:  # the layer does not reach the output: lesions change nothing there
            lab = self._predict_labels(self.overrides(fixed) if fixed else None)
            if on_progress is not None:
                on_progress(len(unit_sets))
            return np.broadcast_to(lab, (len(unit_sets), n)).copy()
        overrides = self.overrides(fixed) if fixed else {}
        out = np.empty((len(unit_sets), n), dtype=np.int64)
        with torch.inference_mode():
            const = self._constant(unit, overrides)
            per_ex = self._per_example_bytes(plan)
            if not fixed and per_ex * n <= self.cache_bytes:
                key = (layer, plan.l2 is not None)
                data = self._lru_get(key)
                if data is None:
                    self._make_room(per_ex * n)
                    data = self._prefix(plan, self._x, overrides, const)
                    self._lru_put(key, data, _nbytes(data))
                out[:] = self._block(plan, unit_sets, data, const, overrides, on_progress)
                return out
            block = int(min(n, max(1, self.cache_bytes // max(per_ex, 1))))
            self._make_room(block * per_ex)
            for lo in range(0, n, block):
                data = self._prefix(plan, self._x[lo:lo + block], overrides, const)
                self._note(_nbytes(data))
                last = lo + block >= n
                out[:, lo:lo + block] = self._block(plan, unit_sets, data, const, overrides,
                                                    on_progress if last else None)
                del data
        return out

    def _constant(self, unit, overrides) -> object:
        """The lesioned units' output value per unit (C,): their bias, or 0."""
        torch = import_torch()
        w = overrides.get(unit.weight, self.program.weights[unit.weight])
        if self.keep_bias and unit.bias is not None:
            return overrides.get(unit.bias, self.program.weights[unit.bias]).detach().clone()
        return torch.zeros(unit.width, dtype=w.dtype, device=w.device)

    def _prefix(self, plan, x, overrides, const) -> dict:
        """Captured values (node -> tensor) over the examples ``x``, in batches; on the incremental
        path also ``"delta"``: the change of every channel at L2's input when it is lesioned."""
        prog = self.program
        parts: dict = {}
        for lo in range(0, len(x), self.batch_size):
            xb = x[lo:lo + self.batch_size]
            env = prog.base_env(overrides)
            env[prog.input] = xb
            prog.run(env, plan.prefix, len(xb), keep=plan.capture)
            for node in plan.capture:
                parts.setdefault(node, []).append(env[node])
        torch = import_torch()
        data = {node: torch.cat(v) if len(v) > 1 else v[0] for node, v in parts.items()}
        if plan.l2 is not None:
            a = data[plan.unit.node]
            base = self._run_chain(plan, a, overrides)
            cmap = _broadcast_const(const, a, plan.axis)
            delta = self._run_chain(plan, cmap, overrides) - base
            if plan.l2.kind == "conv" and self._use_increments(plan, len(a)):
                data["increments"] = self._increments(plan, delta, overrides)
            else:
                data["delta"] = delta
        return data

    def _use_increments(self, plan, e: int) -> bool:
        """Per-unit increments for a convolution L2 (C x e x L2's output values) within 4 x max_elements."""
        out2 = int(np.prod(self.program.shape_of(plan.l2.node)))
        return plan.l2.in_width * out2 * e <= 4 * self.max_elements

    def _increments(self, plan, delta, overrides):
        """(C, e * P): row u is what lesioning input channel u adds to L2's pre-activation over the block
        (``conv(delta[:, u], w2[:, u])``), every u in one grouped convolution."""
        torch = import_torch()
        l2 = plan.l2
        w2 = overrides.get(l2.weight, self.program.weights[l2.weight])  # (out, C, *k)
        c, out = w2.shape[1], w2.shape[0]
        nd = delta.ndim - 2
        wg = w2.transpose(0, 1).reshape((c * out, 1) + tuple(w2.shape[2:]))  # channel u's kernels, grouped
        conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)[nd - 1]
        dz = conv(delta, wg, None, l2.stride or 1, l2.padding, l2.dilation or 1, c)  # (e, C * out, *sp2)
        e = len(delta)
        return dz.reshape(e, c, -1).transpose(0, 1).reshape(c, -1)

    def _run_chain(self, plan, a, overrides):
        prog = self.program
        env = prog.base_env(overrides)
        env[plan.unit.node] = a
        prog.run(env, plan.chain, len(a), keep=[plan.chain[-1].node] if plan.chain else [])
        return env[plan.chain[-1].node] if plan.chain else a

    def _per_example_bytes(self, plan) -> int:
        total = 0
        for node in plan.capture:
            v = node.meta.get("val")
            v = v[0] if isinstance(v, (list, tuple)) else v
            if hasattr(v, "shape"):
                total += int(np.prod([int(d) for d in v.shape[1:]])) * v.element_size()
        if plan.l2 is not None:  # the change of the channels at L2's input, or L2's per-unit increments
            v = (plan.chain[-1].node if plan.chain else plan.unit.node).meta["val"]
            size = int(np.prod([int(d) for d in v.shape[1:]]))
            if plan.l2.kind == "conv":
                size = max(size, plan.l2.in_width * int(np.prod(self.program.shape_of(plan.l2.node))))
            total += size * v.element_size()
        return total

    def _block(self, plan, unit_sets, data, const, overrides, on_progress) -> np.ndarray:
        """Labels (V, e) of every variant over one block of examples with captured values ``data``."""
        a = data[plan.unit.node]
        e = len(a)
        out = np.empty((len(unit_sets), e), dtype=np.int64)
        rows_cap = max(1, self.max_elements // max(plan.max_elements, 1))
        chunk = max(1, rows_cap // max(e, 1))
        for lo in range(0, len(unit_sets), chunk):
            sets = unit_sets[lo:lo + chunk]
            if plan.l2 is not None:
                logits = self._incremental_logits(plan, sets, data, overrides)
                lab, close = _labels_and_close(logits, len(sets), e)
                if close.size:  # near a tie: the plain path, as the reference computes it
                    self.stats["screened"] += int(close.size)
                    vi, ei = close // e, close % e
                    lab.reshape(-1)[close] = self._exact(plan.unit.name, sets, vi, ei, data, const, overrides)
                self.stats["incremental"] += len(sets)
            else:
                lab = self._plain_labels(plan, sets, data, const, overrides)
                self.stats["plain"] += len(sets)
            out[lo:lo + len(sets)] = lab
            if on_progress is not None:
                on_progress(len(sets))
        return out

    def _tiled_env(self, plan, data, v: int, overrides, rows=None) -> dict:
        """The suffix's environment: weights, and side values repeated for ``v`` variants (or the
        example ``rows`` of each)."""
        env = self.program.base_env(overrides)
        for node in plan.capture[1:]:
            t = data[node]
            if node in plan.tiled:
                if rows is not None:
                    env[node] = t[rows]
                else:
                    env[node] = t.unsqueeze(0).expand((v,) + tuple(t.shape)).reshape((v * len(t),) + tuple(t.shape[1:]))
            elif node is not plan.unit.node and not (plan.l2 is not None and node is plan.l2.node):
                env[node] = t
        return env

    def _plain_labels(self, plan, sets, data, const, overrides) -> np.ndarray:
        torch = import_torch()
        a = data[plan.unit.node]
        v, e = len(sets), len(a)
        mask = torch.as_tensor(_unit_mask(sets, a.shape[plan.axis], v), device=a.device)
        shape = [v, 1] + [1] * (a.ndim - 1)
        shape[plan.axis + 1] = a.shape[plan.axis]
        cshape = [1, 1] + [1] * (a.ndim - 1)
        cshape[plan.axis + 1] = a.shape[plan.axis]
        stacked = torch.where(mask.reshape(shape), const.to(a.dtype).reshape(cshape), a.unsqueeze(0))
        env = self._tiled_env(plan, data, v, overrides)
        env[plan.unit.node] = stacked.reshape((v * e,) + tuple(a.shape[1:]))
        self.program.run(env, plan.suffix, v * e, keep=[self.program.output])
        logits = env[self.program.output]
        return logits.reshape(v * e, -1).argmax(dim=-1).cpu().numpy().reshape(v, e)

    def _exact(self, layer, sets, vi, ei, data, const, overrides) -> np.ndarray:
        """Labels of the rows (variant ``vi[r]``, example ``ei[r]``) on the plain path."""
        torch = import_torch()
        plain = self._plan(layer, False)
        a = data[plain.unit.node]
        out = np.empty(len(vi), dtype=np.int64)
        size = max(1, self.max_elements // max(plain.max_elements, 1))
        for lo in range(0, len(vi), size):
            v_, e_ = vi[lo:lo + size], ei[lo:lo + size]
            mask = torch.as_tensor(_unit_mask([sets[i] for i in v_], a.shape[plain.axis], len(v_)), device=a.device)
            shape = [len(v_)] + [1] * (a.ndim - 1)
            shape[plain.axis] = a.shape[plain.axis]
            cshape = [1] * a.ndim
            cshape[plain.axis] = a.shape[plain.axis]
            rows = torch.as_tensor(e_, device=a.device)
            stacked = torch.where(mask.reshape(shape), const.to(a.dtype).reshape(cshape), a[rows])
            env = self._tiled_env(plain, data, 1, overrides, rows=rows)
            env[plain.unit.node] = stacked
            self.program.run(env, plain.suffix, len(v_), keep=[self.program.output])
            out[lo:lo + len(v_)] = env[self.program.output].reshape(len(v_), -1).argmax(dim=-1).cpu().numpy()
        return out

    def _incremental_logits(self, plan, sets, data, overrides):
        """Output (V * e, classes) on the incremental path: L2's pre-activation plus L2 applied to the
        lesioned channels' change, then the rest of the graph."""
        torch = import_torch()
        prog = self.program
        z2 = data[plan.l2.node]
        v, e = len(sets), len(z2)
        if "increments" in data:  # mask (V, C) @ increments (C, e * P): one matrix product
            inc = data["increments"]
            mask = torch.as_tensor(_unit_mask(sets, inc.shape[0], v), device=inc.device).to(inc.dtype)
            z = (mask @ inc).reshape((v, e) + tuple(z2.shape[1:])) + z2.unsqueeze(0)
            env = self._tiled_env(plan, data, v, overrides)
            env[plan.l2.node] = z.reshape((v * e,) + tuple(z2.shape[1:]))
            prog.run(env, plan.suffix, v * e, keep=[prog.output])
            return env[prog.output].reshape(v * e, -1)
        delta = data["delta"]
        smax = max(1, max(len(s) for s in sets))
        idx = np.zeros((v, smax), dtype=np.int64)
        valid = np.zeros((v, smax), dtype=np.float32)
        for i, s in enumerate(sets):
            s = np.asarray(s, dtype=np.int64)
            idx[i, :len(s)] = s
            valid[i, :len(s)] = 1.0
        idx_t = torch.as_tensor(idx, device=delta.device)
        valid_t = torch.as_tensor(valid, device=delta.device, dtype=delta.dtype)
        w2 = overrides.get(plan.l2.weight, prog.weights[plan.l2.weight])
        if plan.l2.kind == "dense":  # w2 (out, C); delta (e, C)
            dg = delta[:, idx_t] * valid_t.unsqueeze(0)  # (e, V, smax)
            wg = w2.t()[idx_t] * valid_t.unsqueeze(-1)  # (V, smax, out)
            z = torch.bmm(dg.permute(1, 0, 2), wg) + z2.unsqueeze(0)  # (V, e, out)
        else:  # w2 (out, C, *k); delta (e, C, *sp)
            nd = delta.ndim - 2
            sp = tuple(delta.shape[2:])
            vshape = (1, v, smax) + (1,) * nd
            dg = (delta[:, idx_t] * valid_t.reshape(vshape)).reshape((e, v * smax) + sp)
            wg = w2[:, idx_t] * valid_t.reshape((1, v, smax) + (1,) * nd)  # (out, V, smax, *k)
            wg = wg.transpose(0, 1).reshape((v * w2.shape[0], smax) + tuple(w2.shape[2:]))
            conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)[nd - 1]
            l2 = plan.l2
            dz = conv(dg, wg, None, l2.stride or 1, l2.padding, l2.dilation or 1, v)
            dz = dz.reshape((e, v) + tuple(z2.shape[1:])).transpose(0, 1)
            z = dz + z2.unsqueeze(0)
        env = self._tiled_env(plan, data, v, overrides)
        env[plan.l2.node] = z.reshape((v * e,) + tuple(z2.shape[1:]))
        prog.run(env, plan.suffix, v * e, keep=[prog.output])
        return env[prog.output].reshape(v * e, -1)


def _zero_units(w, unit, units: np.ndarray) -> None:
    """Set the weights into output ``units`` to 0, in place: ``w[units]``, or for a transposed
    convolution (weight (in, out / groups, *k)) the slice of each unit's group."""
    import torch

    if not unit.transposed:
        w.index_fill_(0, torch.as_tensor(units, device=w.device), 0)
        return
    og = unit.width // unit.groups
    ig = w.shape[0] // unit.groups
    for u in units.tolist():
        g, j = divmod(u, og)
        w[g * ig:(g + 1) * ig, j] = 0


def _reduces_channels(node) -> bool:
    """Whether a reduction (mean/sum/amax) runs over the channel or batch axis."""
    name = str(node.target)
    if not any(r in name for r in ("mean", "sum", "amax")):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dims is None:
        return True
    rank = len(node.args[0].meta["val"].shape)
    dims = [d % rank for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
    return 0 in dims or 1 in dims


def _broadcast_const(const, a, axis: int):
    """The lesioned output map: ``const`` along ``axis`` of one example shaped like ``a``'s rows."""
    shape = [1] * a.ndim
    shape[axis] = a.shape[axis]
    return const.to(a.dtype).reshape(shape).expand((1,) + tuple(a.shape[1:])).contiguous()


def _labels_and_close(logits, v: int, e: int):
    """Argmax labels (V, e) and the flat rows whose top-2 margin is within the screening tolerance."""
    import torch

    lab = logits.argmax(dim=-1)
    if logits.shape[-1] < 2:
        return lab.cpu().numpy().reshape(v, e), np.empty(0, dtype=np.int64)
    top2 = torch.topk(logits, 2, dim=-1).values
    close = (top2[:, 0] - top2[:, 1]) <= _SCREEN_TOL * torch.clamp(top2[:, 0].abs(), min=1.0)
    return lab.cpu().numpy().reshape(v, e), torch.nonzero(close).flatten().cpu().numpy()


def _nbytes(data: dict) -> int:
    return int(sum(t.element_size() * t.nelement() for t in data.values()))


def make_engine(engine: str, program, x, *, keep_bias: bool = False, batch_size: int = 1024,
                max_elements: int | None = None, cache_bytes: int | None = None):
    """The engine called ``engine`` ("fast" or "reference") over ``program`` and inputs ``x``
    (:func:`modtest.frameworks.base.choose_engine`)."""
    return choose_engine(engine, FastEngine, ReferenceEngine, program, x, keep_bias=keep_bias, batch_size=batch_size,
                         max_elements=max_elements, cache_bytes=cache_bytes)


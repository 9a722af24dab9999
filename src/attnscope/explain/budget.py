"""How many inputs one rerun of the model takes at once: the fastest chunk within a memory budget.

The cost of an input is the bytes one forward allocates for it (the sum of every operator's new
output, counted on fake tensors: nothing is allocated or computed), twice that when the chunk is
differentiated (the saved activations plus their gradients). The budget bounds a chunk's bytes: on a
CPU 512 MiB (bench/chunk_budget.py), on a GPU a quarter of the free memory. Within it, a rerun of many
inputs takes the chunk that a short probe measured fastest per input (`fastest`: a few chunk sizes
timed once per model, input shape and kind of pass, cached for the process), since the fastest chunk
depends on the model and the machine (resnet18 at 224 px: 8; a SmallCNN at 64 px: ~35; chunks of 1–2
cost resnet18 15–25 % more); chunks and so float rounding then follow the machine's speed (maps agree across
processes to rounding; `fixed_chunks` or ATTNSCOPE_CHUNK_PROBE=0 for the budget's fixed chunks). A setting whose
chunk of one does not fit the memory there is refused with the estimate (`ResourceError`), before anything runs.

The estimate runs the model's forward once per input shape as Python on fake tensors (cached per
model and its module structure, `structure`): hooks on its modules see fake tensors then.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from attnscope.errors import InputError, ResourceError

CPU_BUDGET = 512 * 2**20  # bytes per forward-only chunk on a CPU: a bound; the probe picks within it
CPU_GRAD_BUDGET = 512 * 2**20  # bytes per differentiated chunk on a CPU (bench/chunk_budget.py)
GPU_SHARE = 0.25  # of the free device memory, per chunk
PROBE_MIN = 64  # reruns of fewer inputs take the budget's chunk: a probe would cost more than it saves
PROBE_MAX = 64  # the largest chunk a probe tries (per-input time is flat beyond it on every model measured)
_BUDGET: contextvars.ContextVar[int | None] = contextvars.ContextVar("attnscope_memory_budget", default=None)
_COSTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int | None]] = weakref.WeakKeyDictionary()
_FASTEST: dict[tuple, tuple[int, float]] = {}  # (architecture, kind of pass, ...) → (chunk, seconds per input)


def architecture(model: nn.Module) -> tuple:
    """What a model's cost per input depends on: its module types and their parameter shapes and dtypes — the same
    for two loads of one checkpoint, so they share a probe (and so the same chunks and the same rounding)."""
    return tuple((type(m).__qualname__, tuple((tuple(p.shape), p.dtype) for p in m.parameters(recurse=False)))
                 for m in model.modules())


def structure(model: nn.Module) -> tuple:
    """What identifies a model's computation apart from its values: each module, parameter and buffer object
    (and an instance-level `forward`). A replaced submodule or parameter changes it; an in-place update of a
    parameter (a training step) does not — caches keyed by it then still read the new values."""
    modules = tuple((id(m), id(m.__dict__.get("forward"))) for m in model.modules())
    tensors = tuple(id(t) for t in model.parameters()) + tuple(id(t) for t in model.buffers())
    return modules + tensors


_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("attnscope_chunk_probe", default=True)


@contextmanager
def fixed_chunks() -> Iterator[None]:
    """Inside the block, reruns take the budget's chunk, never a probed one (also `ATTNSCOPE_CHUNK_PROBE=0`): the
    probe follows the machine's speed, and a different chunk rounds batched kernels differently (1e-7 of a
    logit), so bitwise-reproducible numbers across processes need fixed chunks."""
    token = _PROBING.set(False)
    try:
        yield
    finally:
        _PROBING.reset(token)


def probing() -> bool:
    """Whether reruns may take a probed chunk (`fixed_chunks`, $ATTNSCOPE_CHUNK_PROBE)."""
    return _PROBING.get() and os.environ.get("ATTNSCOPE_CHUNK_PROBE", "1") != "0"


@contextmanager
def memory_budget(nbytes: int) -> Iterator[None]:
    """Chunks of every rerun inside the block fit `nbytes` (instead of the device's default budget)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1:
        raise InputError(f"memory budget must be a positive number of bytes, got {nbytes!r}")
    token = _BUDGET.set(nbytes)
    try:
        yield
    finally:
        _BUDGET.reset(token)


def parse_bytes(text: str) -> int:
    """'512M', '2G', '1.5GiB', '100000' → bytes (binary units)."""
    units = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    number, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise InputError(f"memory budget {text!r} is not a size such as 512M or 2G") from None
    if not value >= 1:
        raise InputError(f"memory budget must be at least one byte, got {text!r}")
    return int(value)


def budget(device: torch.device, grad: bool = False) -> int:
    """Bytes one chunk may use: `memory_budget`'s, else $ATTNSCOPE_MEMORY_BUDGET, else the device's default
    (on a CPU, larger for a chunk with a backward: `grad`)."""
    given = _BUDGET.get()
    if given is not None:
        return given
    env = os.environ.get("ATTNSCOPE_MEMORY_BUDGET")
    if env:
        return parse_bytes(env)
    if device.type == "cuda":
        return int(GPU_SHARE * torch.cuda.mem_get_info(device)[0])
    return CPU_GRAD_BUDGET if grad else CPU_BUDGET


def available(device: torch.device) -> int:
    """Bytes that can still be allocated: free device memory, or the system's MemAvailable on a CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux: physical memory as the bound
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class _Allocations(TorchDispatchMode):
    """Counts the bytes of every new (non-aliasing) operator output."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(r.alias_info is not None for r in func._schema.returns):
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.total += t.numel() * t.element_size()
        return out


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """`logger` silent for a while (fake tensors log an operator's error before it is raised, and reported)."""
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def input_cost(model: nn.Module, shape: tuple[int, ...], dtype: torch.dtype,
               after: nn.Module | None = None) -> int | None:
    """Bytes one forward of `model` allocates for one input of `shape` (C, H, W), counted on fake tensors;
    with `after` (a submodule), only from that module's output on (what runs on a replaced output).

    None when the model cannot run on fake tensors (an operator whose output size depends on the
    data, one without a fake implementation, Python code that reads values): then no estimate exists
    and no bound is applied. A `RuntimeError` the model raises itself is an `InputError` quoting it. The model's
    forward runs as Python on fake tensors (hooks included).
    """
    from torch._subclasses import fake_tensor as fake

    cannot = (fake.DataDependentOutputException, fake.DynamicOutputShapeException, fake.UnsupportedOperatorException,
              fake.UnsupportedFakeTensorException)  # what fake tensors cannot do; any other error is the model's

    key = (tuple(shape), dtype, None if after is None else id(after), structure(model))
    known = _COSTS.setdefault(model, {})
    if key not in known:
        count, at = _Allocations(), []
        mark = lambda _m, _i, o: at.append(count.total - _bytes(o))  # what ran before `after`'s output
        handle = None if after is None else after.register_forward_hook(mark)
        try:
            with torch.no_grad(), fake.FakeTensorMode(allow_non_fake_inputs=True), count, _quiet(fake.log):
                model(torch.empty((1, *shape), dtype=dtype))
            known[key] = count.total - (at[0] if at else 0)
        except cannot:
            known[key] = None
        except RuntimeError as e:  # the model's own refusal of this input (e.g. an image too small to pool)
            raise InputError(f"the model raised on inputs of shape {(1, *shape)}: {str(e).splitlines()[0]}") from e
        finally:
            if handle is not None:
                handle.remove()
    return known[key]


def _bytes(out: object) -> int:
    return out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0


def gib(nbytes: float) -> str:
    """A size in GiB, MiB or KiB, whichever reads best."""
    if nbytes >= 2**27:
        return f"{nbytes / 2**30:.2f} GiB"
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"


def chunk_size(cost: int | None, device: torch.device, requested: int | None, total: int, grad: bool,
               what: str = "batch_size") -> int:
    """Inputs per rerun: `requested`, or the most whose cost fits the budget (1 … `total`); refuses what cannot fit.

    `cost`: bytes per input of one forward (`input_cost`); doubled when `grad`.
    """
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise InputError(f"{what} must be a positive integer (or None: chosen from the memory budget), "
                         f"got {requested!r}")
    total = max(1, total)
    if cost is None:
        return min(requested or 64, total)  # no estimate: the former fixed chunk
    per_input = cost * (2 if grad else 1)
    free = available(device)
    if requested is None:  # the budget's chunk, never more than what is free
        chunk = max(1, min(total, budget(device, grad) // per_input, free // per_input))
    else:
        chunk = min(requested, total)
    if chunk * per_input > free:
        fits = free // per_input
        hint = f"; {what}={fits} fits" if fits >= 1 else "; use smaller images or a smaller model"
        raise ResourceError(f"{what}={chunk} needs ≈ {gib(chunk * per_input)} ({gib(per_input)} per input, "
                            f"estimated from one {'forward + backward' if grad else 'forward'} on fake tensors) "
                            f"and {gib(free)} is available{hint}")
    return chunk


@dataclass(frozen=True)
class Probe:
    """How to time a chunk of n inputs of one kind of pass: `run(n)` does the work of n inputs (on any data of
    the right shape); `kind` names the pass (layout, tail, …) so different passes are measured apart."""

    kind: str
    run: Callable[[int], object]


def sizes(limit: int) -> list[int]:
    """The chunks a probe tries: 2, 4, 8, … up to `limit` (and `PROBE_MAX`), and `limit` itself when smaller."""
    top = min(limit, PROBE_MAX)
    out = [1 << k for k in range(1, top.bit_length()) if 1 << k <= top]
    return out + [top] if not out or out[-1] != top else out


def _seconds(run: Callable[[int], object], n: int, device: torch.device) -> float:
    """Time of `run(n)`: CPU time of the process on a CPU (what the work costs, whatever the machine's load),
    wall time between synchronisations on a GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        run(n)
        torch.cuda.synchronize(device)
        return time.perf_counter() - start
    start = time.process_time()
    run(n)
    return time.process_time() - start


def fastest(model: nn.Module, key: tuple, probe: Probe, limit: int, device: torch.device) -> tuple[int, float]:
    """The chunk (≤ `limit`) with the least time per input for `probe`, and that time, measured once per model
    `architecture`, `key` and `probe.kind`, then cached for the process (every model of that architecture gets the
    same chunks, so the same float rounding): each of `sizes(limit)` twice, in increasing order, the faster of the
    two (the first pass of a new batch size picks and builds its kernels: SmallCNN's first pass of 32 at 64 px
    took longer per input than one of 64, its second 1.8 × less), stopping after two sizes that were no faster
    per input than the best."""
    known = _FASTEST
    key = (*key, probe.kind, min(limit, PROBE_MAX), device.type, architecture(model))  # what `sizes` tries
    if key not in known:
        best, best_time, worse = 0, float("inf"), 0
        for n in sizes(limit):
            per_input = min(_seconds(probe.run, n, device) for _ in range(2)) / n
            if per_input < best_time:
                best, best_time, worse = n, per_input, 0
            else:
                worse += 1
                if worse == 2:
                    break
        known[key] = (best, best_time)
    return known[key]


def probed_chunk(model: nn.Module, cost: int | None, device: torch.device, requested: int | None, total: int,
                 grad: bool, key: tuple, probe: Probe | None) -> int:
    """`chunk_size`'s chunk, or — for a rerun of `PROBE_MIN` inputs or more with nothing requested — the
    fastest chunk within it (`fastest`)."""
    return probed(model, cost, device, requested, total, grad, key, probe)[0]


def probed(model: nn.Module, cost: int | None, device: torch.device, requested: int | None, total: int,
           grad: bool, key: tuple, probe: Probe | None) -> tuple[int, float | None]:
    """`probed_chunk`'s chunk and, where the probe ran (or had run), its time per input."""
    limit = chunk_size(cost, device, requested, total, grad)
    if requested is not None or probe is None or total < PROBE_MIN or limit <= 2 or not probing():
        return limit, None
    chunk, per_input = fastest(model, key, probe, limit, device)
    return min(chunk, total), per_input


def forward_chunk(model: nn.Module, images: torch.Tensor, requested: int | None,
                  run: Callable[[torch.Tensor, int], object], kind: str) -> int:
    """Inputs per no-grad forward for a rerun over `images` (B, ...) through `run(x, chunk)`: `requested`, or
    the chunk a probe on copies of the first image measures fastest within the memory budget (`probed`; cached
    per architecture, input shape and `kind`). A cache-sized chunk can beat a large one several times over
    (SmallCNN at 64 px, NHWC: 32 inputs per forward cost 2.6 × less CPU per input than 256, bench/README.md)."""
    shape, one = tuple(images.shape[1:]), images[:1]
    probe = Probe(kind, lambda n: run(one.expand(n, *shape).clone(), n))
    cost = input_cost(model, shape, images.dtype)
    return probed_chunk(model, cost, images.device, requested, len(images), False,
                        (shape, images.dtype, False, kind), probe)


LARGE_INPUT = 1 / 64  # of the available memory: inputs at least this large are checked before the shared pass


def check_pass(model: nn.Module, images: torch.Tensor, device: torch.device, grad: bool) -> None:
    """Refuses a pass of `model` over all of `images` (B, C, H, W) whose estimate exceeds the memory there is.

    Only batches whose images alone take `LARGE_INPUT` of the available memory are estimated (a forward
    allocates many times its input): the usual call runs no estimate, and the model no fake forward.
    """
    if images.numel() * images.element_size() < LARGE_INPUT * available(device):
        return
    cost = input_cost(model, tuple(images.shape[1:]), images.dtype)
    chunk_size(cost, device, images.shape[0], images.shape[0], grad)

"""Device selection and seeding, in one place."""
from __future__ import annotations

import functools
import os
import random
from contextlib import nullcontext
from typing import TYPE_CHECKING

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


class DeviceError(ValueError):
    """The requested device does not exist on this machine; one line."""


def check_device(device: "str | None", where: str = "device") -> None:
    """Fail before any work, with one line, if ``device`` cannot be used here."""
    import re

    if device in (None, "auto", "cpu"):
        return
    if not isinstance(device, str) or not re.fullmatch(r"cuda(:\d+)?|mps", device):
        raise DeviceError(f"{where}: {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"{where}: {device} requested, but CUDA is not available here (torch {torch.__version__}); use cpu or auto")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(f"{where}: {device} requested, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise DeviceError(f"{where}: mps requested, but MPS is not available here; use cpu or auto")


def resolve_device(device: "str | torch.device | None" = None) -> "torch.device":
    """``auto``/None → CUDA if available, else MPS, else CPU; anything else as given."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def autocast_for(device: "torch.device", enabled: bool):
    """bf16 autocast on CUDA when asked (fp16 where bf16 is missing; no GradScaler needed
    for bf16); nothing on CPU, where autocast would slow small models down."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (model init draws from torch's global generator)."""
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)


def device_name(device: "torch.device") -> str:
    """A readable device description for result rows: ``cuda:NVIDIA A100``, or on a CPU its
    thread count and type, ``cpu:2t (AVX2, AMD EPYC)``. Both decide the floats a CPU run
    computes, so a re-run is compared bit for bit only where they match (`cpu_type`)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu:{torch.get_num_threads()}t ({cpu_type()})"
    return f"{device.type}:{torch.get_num_threads()}t"


def cpu_type() -> str:
    """What a CPU's floats depend on besides its thread count: the kernel family torch
    dispatches to (its CPU capability: DEFAULT, AVX2, AVX512, ...) and the processor model
    (oneDNN picks its convolution blocking, and MKL its code path, by model). Two CPUs that
    differ here differ in the last bits of a convolution, and training amplifies that to
    seed-sized gaps: measured, one 5,000-image CIFAR-10 cell recorded at 63.8 % re-ran at
    61.7 % on another CPU type, with the same code, seed and threads. The variables that
    override a library's dispatch (`CPU_DISPATCH_ENV`) are part of the type when set."""
    parts = [torch.backends.cpu.get_cpu_capability(), _cpu_model()]
    # variables that override a library's own dispatch (three of them measured to move a 3-epoch run by 2-3 points)
    parts += [f"{k}={os.environ[k]}" for k in CPU_DISPATCH_ENV if os.environ.get(k)]
    return ", ".join(p for p in parts if p)


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    """The processor's model name (read once: every row and poison record asks for it)."""
    import platform

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            model = next((line.partition(":")[2].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return " ".join((model or platform.processor() or platform.machine()).replace(",", " ").split())


#: Environment variables that change which CPU kernels torch's libraries run: ATen's kernel
#: family, oneDNN's instruction set (convolutions), MKL's code path (matrix products).
CPU_DISPATCH_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


def parse_cpu_device(name: "str | None") -> "tuple[int, str] | None":
    """A row's CPU device string as (threads, CPU type); the type is "" in rows from before it
    was recorded (``cpu:1t``). None for any other device."""
    import re

    m = re.fullmatch(r"cpu:(\d+)t(?: \((.+)\))?", name or "")
    return None if m is None else (int(m.group(1)), m.group(2) or "")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_allocator_tuned = False


def keep_cpu_memory() -> bool:
    """Stop glibc from handing multi-MB blocks back to the OS between training steps.

    Why: by default glibc serves large blocks with mmap and trims the heap after frees, so on
    CPU each step's activations land on fresh pages and pay a page fault per 4 KB (measured:
    zeroing one conv activation took 6x longer, and run-to-run speed varied by ±15%). PyTorch's
    CPU tuning guide swaps in jemalloc/tcmalloc for the same reason; raising the two thresholds
    gets the effect in-process. Idempotent; a no-op (returns False) off glibc.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        return False
    _allocator_tuned = ok
    return ok


def prepare_device(device: "str | torch.device | None" = None) -> "torch.device":
    """`resolve_device`, plus the process-wide setup that device wants (on CPU:
    `keep_cpu_memory`). Every entry point that computes calls this once."""
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_cpu_memory()
    return dev

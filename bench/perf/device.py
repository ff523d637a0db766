"""Where a benchmark runs, and how its hand-written loops run there.

Every benchmark that trains takes ``--device`` (auto: CUDA when present, else MPS, else the
CPU) and runs all of its loops on it: the harness's, the pure loop and the reference style.
A comparison is only fair when the hand-written loops get what the harness gets on that
device, so `BenchDevice` gives them the harness's own CUDA defaults (bf16 autocast,
channels_last for conv models: `bench.device.autocast_for`, `TrainConfig.channels_last`)
and a `sync` to call before reading a clock, since CUDA kernels run asynchronously and a
timer read without it measures only the launches.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps: where every loop runs (auto: CUDA if present)")


@dataclass(frozen=True)
class BenchDevice:
    """The device and the harness's defaults on it, for the pure and reference loops."""

    dev: "torch.device"

    @classmethod
    def from_arg(cls, name: str | None) -> "BenchDevice":
        """Fail with one line before any work if ``--device`` cannot be used here."""
        from bench.device import DeviceError, check_device, prepare_device

        try:
            check_device(name, "--device")
        except DeviceError as e:
            raise SystemExit(f"error: {e}") from None
        return cls(prepare_device(name))

    @property
    def channels_last(self) -> bool:
        return self.dev.type == "cuda"

    def model(self, model: "torch.nn.Module") -> "torch.nn.Module":
        import torch

        model = model.to(self.dev)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def input(self, x: "torch.Tensor") -> "torch.Tensor":
        """A batch on the device (a non-blocking copy), in the model's memory format."""
        import torch

        x = x.to(self.dev, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def autocast(self):
        from bench.device import autocast_for

        return autocast_for(self.dev, True)

    def sync(self) -> None:
        import torch

        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        elif self.dev.type == "mps":
            torch.mps.synchronize()

    def describe(self) -> str:
        from bench.device import device_name

        return device_name(self.dev)

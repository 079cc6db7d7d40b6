"""The local stand-in flow service behind `batchrun serve`."""

from __future__ import annotations

from .app import Faults, FlowService, Latency, ServiceConfig, load_flows, run, serve

__all__ = [
    "Faults",
    "FlowService",
    "Latency",
    "ServiceConfig",
    "load_flows",
    "run",
    "serve",
]

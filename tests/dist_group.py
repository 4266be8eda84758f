"""A one-process gloo group, so DeepSpeed and Megatron-core MoE layers run on a CPU machine."""

from __future__ import annotations

import os
import socket

import torch.distributed as dist


def single_process_group() -> None:
    """Start a world of one (rank 0, gloo) unless this test process has one already."""
    if dist.is_initialized():
        return
    with socket.socket() as sock:  # a free port, so parallel test workers do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=0, world_size=1)

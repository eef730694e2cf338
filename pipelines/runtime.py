"""Process-wide torch settings the core asks for through `hypermosaic.registry`.

On the CPU the intra-op thread count decides the order of float sums, so diffusion pixels
depend on it: a build's workers and a node regenerated later must run with the same count.
Here it is set (for a worker, for good) or set around a block; and the CUDA devices are counted
for sizing a pool of GPU workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["cuda_device_count", "set_torch_threads", "torch_threads"]


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (0: leave them), then restore."""
    if not count:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_torch_threads(count: int) -> None:
    """Give torch ``count`` intra-op threads in this process (0: leave them)."""
    if count:
        torch.set_num_threads(count)


def cuda_device_count() -> int:
    """CUDA GPUs torch can see; 0 without CUDA."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0

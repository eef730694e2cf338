"""The one seam to the torch side (`hypermosaic.registry`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hypermosaic import registry

_NO_TORCH = """
import sys
for name in ("torch", "diffusers", "transformers", "safetensors"):
    sys.modules[name] = None  # importing any of them now fails
import hypermosaic, hypermosaic.build, hypermosaic.canvas, hypermosaic.upscale
import hypermosaic.video, hypermosaic.publish, hypermosaic.cli
from hypermosaic import registry
from hypermosaic.errors import InputError
assert registry.cuda_device_count() == 0
try:
    registry.load_upscaler("fast")
except InputError as exc:
    print(exc)
"""


def test_the_core_imports_and_answers_without_torch() -> None:
    """Every command package and the CLI import with torch unavailable; asking the registry
    for a torch component then is one line naming what is missing."""
    result = subprocess.run([sys.executable, "-c", _NO_TORCH], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "upscaler.load: needs torch, which is not installed"


@pytest.mark.parametrize("name", sorted(registry.COMPONENTS))
def test_every_component_is_there(name: str) -> None:
    assert callable(registry.component(name))

"""Real-ESRGAN's two generator networks in plain PyTorch, with basicsr's parameter names.

`RRDBNet` (x4plus, anime) and `SRVGGNetCompact` (animevideov3, "fast") are written from the
papers with the parameter names of basicsr, so a user's own Real-ESRGAN `.pth` or
`.safetensors` loads into them unchanged (`hypermosaic.pipelines.esrgan.weights`). Which
registry model uses which network, and how deep, is model identity and lives in the torch-free
core (`hypermosaic.identity.ESRGAN_MODELS`); `make_network` builds it here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hypermosaic.identity import EsrganModel

__all__ = [
    "ARCHITECTURES",
    "RRDB",
    "RRDBNet",
    "ResidualDenseBlock",
    "SRVGGNetCompact",
    "make_network",
]


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each fed the concatenation of all earlier outputs; residual x0.2."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, residual x0.2 (ESRGAN)."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator (Wang et al. 2018) as used by Real-ESRGAN x4plus and x4plus-anime.

    Scales 2 and 1 fold the input with pixel-unshuffle first, as basicsr does, so the body
    always upsamples 4x.
    """

    bytes_per_pixel = 16384  # rough activation memory per input pixel, to size CUDA tiles

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        self.scale = scale
        fold = {4: 1, 2: 4, 1: 16}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * fold, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale < 4:
            x = F.pixel_unshuffle(x, 4 // self.scale)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2.0)), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2.0)), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    """Plain conv stack at input resolution, pixel-shuffled, plus a nearest-upsampled input.

    Real-ESRGAN's compact model (realesr-animevideov3, realesr-general-x4v3), PReLU version.
    """

    bytes_per_pixel = 2048  # rough activation memory per input pixel, to size CUDA tiles

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
    ) -> None:
        super().__init__()
        self.scale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=float(self.scale), mode="nearest")
        return self.upsampler(out) + base


ARCHITECTURES: dict[str, tuple[type[RRDBNet] | type[SRVGGNetCompact], str, str]] = {
    "rrdb": (RRDBNet, "num_block", "scale"),
    "srvgg": (SRVGGNetCompact, "num_conv", "upscale"),
}
"""`EsrganModel.arch` -> the network class and its options for ``blocks`` and ``scale``."""


def make_network(model: EsrganModel) -> nn.Module:
    """An untrained network shaped as the registry ``model``: its architecture, depth and
    scale (`hypermosaic.identity.ESRGAN_MODELS`)."""
    network, depth, scale = ARCHITECTURES[model.arch]
    return network(**{depth: model.blocks, scale: model.scale})

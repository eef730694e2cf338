"""The recolor engine's two blends, measured on whole trees in this process.

A build's tiles are computed here with the build's own functions (`cut_tiles`, then the engine),
depth first, without Dask, files or publishing: PNG nodes are lossless, so these are the bytes a
build stores. For each variant and each depth ``d`` of sub-images it prints

- **PSNR** (dB): the sub-images of each depth-``d - 1`` node side by side, each shrunk to 8
  pixels (a box filter: block means), against that node shrunk to ``grid x 8`` pixels, pooled
  over the nodes. At depth 1 this is the build's preview (depth-1 nodes) shrunk to
  ``grid x 8`` against the primary: does the primary still show from afar? Deeper, the same
  question each time the viewer zooms a level in. In brackets the same at 32 pixels per
  sub-image (where their own content shows, so no mosaic comes near its parent there).
- **detail**: the Pearson correlation of each sub-image's `highpass` lightness (CIE L*, the
  Laplacian pyramid's levels finer than 16 pixels: structures up to about 1/16 of the side,
  whatever the size) with its source's, averaged over the sub-images of the depth (beyond
  depth 1, every ``--sample``-th): how much of the source's own detail survives in them (1: all
  of it, at any contrast; 0: none). In brackets the same for structures up to 1/8 of the side.
- **tile mean**: the largest difference (uint8 levels) between a sub-image's mean colour and its
  tile's, over the sub-images of depth 1.
- milliseconds per tile (the engine only).

``--picture PATH`` writes a before/after PNG: a column per variant, its depth-1 sub-images
side by side as the build's preview shows them, over three of them larger.

    python -m benchmarks.bench_recolor [--config examples/demo.toml] [--grid 4 --depth 3]
        [--variant transfer:0.6,0.5 --variant detail:0.7,0.6] [--sample 7]
        [--picture docs/images/x.png]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks._machine import print_machine
from hypermosaic.build.config import BuildConfig, load_build_config
from hypermosaic.build.engines import TileContext, TileJob
from hypermosaic.build.recolor import RecolorEngine, highpass, srgb_to_lab
from hypermosaic.build.tasks import cut_tiles
from hypermosaic.images import load_image, resize, square_crop

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DETAIL_SIDE = 16
"""The detail figure's pyramid level: structures up to about 1/16 of a sub-image's side."""


def detail_correlation(image: np.ndarray, source: np.ndarray, side: int = DETAIL_SIDE) -> float:
    """Correlation of the `highpass` lightness of ``image`` and ``source`` (same shape, uint8
    RGB): the Laplacian pyramid's levels finer than ``side`` pixels; 0 when either has none."""
    a = highpass(srgb_to_lab(image)[..., :1], side).ravel().astype(np.float64)
    b = highpass(srgb_to_lab(source)[..., :1], side).ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def box(image: np.ndarray, side: int) -> np.ndarray:
    """Mean of each block: ``image`` (a multiple of ``side``) shrunk to ``side`` x ``side``."""
    k = image.shape[0] // side
    return image.reshape(side, k, side, k, -1).mean(axis=(1, 3))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_of([float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())])


def psnr_of(squared_errors: list[float]) -> float:
    """PSNR (dB, uint8 scale) of the pooled mean squared errors."""
    mse = float(np.mean(squared_errors))
    return float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


@dataclass
class Tree:
    """What one build variant measured, per depth of the sub-images."""

    name: str
    afar: dict[int, list[float]] = field(default_factory=dict)  # squared errors, grid x 8
    closer: dict[int, list[float]] = field(default_factory=dict)  # and at grid x 32
    detail: dict[int, list[float]] = field(default_factory=dict)
    coarse: dict[int, list[float]] = field(default_factory=dict)  # detail up to 1/8 of the side
    mean_error: float = 0.0
    seconds: float = 0.0
    tiles: int = 0
    depth1: list[np.ndarray] = field(default_factory=list)


def mosaic(children: np.ndarray, grid: int, cell: int) -> np.ndarray:
    """Sibling sub-images ``(grid * grid, s, s, 3)`` in raster order, each box-shrunk to
    ``cell`` px, side by side: the parent's region of the canvas, seen from afar."""
    cells = np.stack([box(child.astype(np.float64), cell) for child in children])
    return cells.reshape(grid, grid, cell, cell, 3).transpose(0, 2, 1, 3, 4).reshape(
        grid * cell, grid * cell, 3)


def build_tree(config: BuildConfig, name: str, strengths: list[float], blend: str,
               sample: int) -> Tree:
    """Every node of ``config``'s full tree, depth first, measured as it is made; the
    detail figure of every ``sample``-th node of each depth beyond 1."""
    size, grids = config.size, config.grids
    primary = resize(square_crop(load_image(config.primary.image)), size, size)
    settings = config.recolor.model_dump()
    settings["blend"] = blend
    engine = RecolorEngine(**settings)
    tree = Tree(name)
    counts: dict[int, int] = {}  # sub-images seen per depth, for --sample

    def visit(image: np.ndarray, address: tuple[tuple[int, int], ...]) -> None:
        depth = len(address)
        if depth == len(grids):
            return
        grid = grids[depth]
        strength = strengths[min(depth, len(strengths) - 1)]
        jobs = [TileJob((*address, (r, c)), 0, "", "", strength, 1, 1.0)
                for r in range(grid) for c in range(grid)]
        inits = cut_tiles(image, grid, size, jobs)
        source = primary if engine.source == "primary" else resize(image, size, size)
        start = time.perf_counter()
        children = engine.tiles(inits, jobs, TileContext(image, grid, primary))
        tree.seconds += time.perf_counter() - start
        tree.tiles += len(jobs)
        for cell, errors in ((8, tree.afar), (32, tree.closer)):
            shrunk = np.rint(box(image.astype(np.float64), grid * cell))
            seen = np.clip(np.rint(mosaic(children, grid, cell)), 0, 255)
            errors.setdefault(depth + 1, []).append(float(((seen - shrunk) ** 2).mean()))
        scores = tree.detail.setdefault(depth + 1, [])
        coarse = tree.coarse.setdefault(depth + 1, [])
        for job, init, child in zip(jobs, inits, children, strict=True):
            counts[depth + 1] = counts.get(depth + 1, -1) + 1
            if depth == 0 or counts[depth + 1] % sample == 0:
                scores.append(detail_correlation(child, source))
                coarse.append(detail_correlation(child, source, 8))
            if depth == 0:
                tree.mean_error = max(tree.mean_error, float(np.abs(
                    child.reshape(-1, 3).mean(0) - init.reshape(-1, 3).mean(0)).max()))
                tree.depth1.append(child)
            visit(child, job.address)

    visit(primary, ())
    return tree


def parse_variant(text: str) -> tuple[str, list[float] | None]:
    """``blend`` or ``blend:s1,s2`` (strength per depth, the last repeats)."""
    blend, _, rest = text.partition(":")
    return blend, [float(s) for s in rest.split(",")] if rest else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=EXAMPLES / "demo.toml")
    parser.add_argument("--grid", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--variant", action="append",
                        help="blend[:strength,...]; default: transfer and detail at the "
                             "config's strengths")
    parser.add_argument("--sample", type=int, default=1,
                        help="measure the detail of every n-th sub-image")
    parser.add_argument("--picture", type=Path)
    args = parser.parse_args()
    print_machine()
    overrides = {"grid": args.grid, "depth": args.depth}
    config = load_build_config(args.config, overrides)
    grids = config.grids
    print(f"{args.config.name}: size {config.size}, grids {list(grids)}; PSNR of each "
          f"level's sub-images against their parent at grid x 8 (x 32), dB")
    trees = []
    for text in args.variant or ["transfer", "detail"]:
        blend, strengths = parse_variant(text)
        if strengths is None:
            strengths = [config.level(d).strength for d in range(1, config.depth + 1)]
        name = f"{blend} {','.join(f'{s:g}' for s in strengths)}"
        tree = build_tree(config, name, strengths, blend, args.sample)
        trees.append(tree)
        figures = "  ".join(
            f"d{d} {psnr_of(tree.afar[d]):5.2f} ({psnr_of(tree.closer[d]):5.2f}) "
            f"{np.mean(tree.detail[d]):.3f} ({np.mean(tree.coarse[d]):.3f})"
            for d in sorted(tree.afar))
        print(f"{name:<16} PSNR (x32) detail (1/8): {figures}   tile mean within "
              f"{tree.mean_error:.2f}   {1000 * tree.seconds / tree.tiles:.1f} ms/tile")
    if args.picture:
        write_picture(args.picture, trees, grids[0])


def write_picture(path: Path, trees: list[Tree], grid: int) -> None:
    """One column per variant: its depth-1 sub-images side by side at 384 px (as the build's
    preview shows them, Lanczos), and under it three of them at 128 px from the row a little
    above the centre; reduced to 256 colours (or fewer) while the PNG would pass 280 KB."""
    side, cell, gap = 384, 128, 4
    row = 3 * grid // 8
    columns = []
    for tree in trees:
        step = side // grid
        preview = np.concatenate([np.concatenate(
            [resize(tree.depth1[r * grid + c], step, step) for c in range(grid)], axis=1)
            for r in range(grid)])
        strip = [resize(tree.depth1[row * grid + col], cell, cell)
                 for col in range(grid // 8, grid // 8 + 3)]
        columns.append(np.concatenate(
            [preview, np.full((gap, side, 3), 255, np.uint8), np.concatenate(strip, axis=1)]))
    spacer = np.full((columns[0].shape[0], gap, 3), 255, np.uint8)
    picture = Image.fromarray(np.concatenate(
        [x for column in columns for x in (column, spacer)][:-1], axis=1))
    picture.save(path, optimize=True)
    for colours in (256, 192, 128):  # small enough for the docs
        if path.stat().st_size <= 280_000:
            break
        picture.quantize(colours, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    print(f"{path}: {picture.width}x{picture.height}, {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()

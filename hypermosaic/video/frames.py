"""Frames rendered from a build's node images: a pure function of the view.

`FrameRenderer` draws the view of the canvas a frame shows from the shallowest depth whose
nodes are sharp enough, never enlarging a node where a sharper one is stored, on a `BACKGROUND`
wherever the view leaves the canvas. The nodes around the view are pasted once into a region,
converted to YUV once, and the following frames are resampled from it; decoded nodes are kept,
reduced, in a byte-capped `NodeCache` that several renderers may share, and decoded on a few
threads (``threads``: it changes the speed, never the pixels). Memory stays flat however long
the video: a few regions and the cache.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from hypermosaic.errors import InputError
from hypermosaic.store import Store
from hypermosaic.tree import Address, Plan
from hypermosaic.video.camera import View, ladder_side, mip_for
from hypermosaic.video.planes import Planes, rgb_to_planes
from hypermosaic.video.regions import BLEND, CanvasPart, address_at, canvas_part, region_cells

__all__ = [
    "BACKGROUND",
    "DECODE_THREADS",
    "NODE_CACHE_BYTES",
    "PAD",
    "FrameRenderer",
    "NodeCache",
    "background_planes",
]

NODE_CACHE_BYTES = 192 << 20
DECODE_THREADS = 2
"""Threads decoding node images unless told otherwise (``--workers``)."""
BACKGROUND = (0, 0, 0)
"""The RGB colour around the canvas, where a view (the whole mosaic fitted) leaves it."""
PAD = 8
"""Pixels of `BACKGROUND` (even, for 4:2:0) added to a region where it meets the canvas edge, so
a frame resamples the edge against the background at sub-pixel accuracy."""


def background_planes(width: int, height: int) -> Planes:
    """A width x height frame of `BACKGROUND` (exactly what `rgb_to_planes` makes of it)."""
    y, u, v = (int(p[0, 0]) for p in rgb_to_planes(Image.new("RGB", (2, 2), BACKGROUND)))
    return Planes(np.full((height, width), y, np.uint8),
                  np.full((height // 2, width // 2), u, np.uint8),
                  np.full((height // 2, width // 2), v, np.uint8))


class NodeCache:
    """Decoded node images at the mip levels asked for (`mip_for`), least recently used dropped
    beyond ``limit`` bytes.

    When a depth first comes into view its nodes are shown small and many at once; keeping them
    reduced lets the following regions reuse them without decoding again, in bounded memory.
    """

    def __init__(
        self, store: Store, size: int, limit: int, threads: int = DECODE_THREADS
    ) -> None:
        self.store, self.size, self.limit, self.threads = store, size, limit, threads
        self._images: OrderedDict[tuple[Address, int], Image.Image] = OrderedDict()
        self._bytes = 0

    def get_many(self, addresses: list[Address], mip: int) -> list[Image.Image]:
        """The nodes at ``mip`` pixels; those not cached are decoded on ``threads`` threads (and
        cached in the order asked, so the thread count never changes what is kept).

        Raises InputError for a node image that is unreadable or not the manifest's size.
        """
        found: dict[Address, Image.Image] = {}
        missing = []
        for address in addresses:
            image = self._images.get((address, mip))
            if image is not None:
                self._images.move_to_end((address, mip))
                found[address] = image
            else:
                missing.append(address)
        if missing:
            with ThreadPoolExecutor(max_workers=self.threads) as pool:
                for address, image in zip(
                    missing, pool.map(lambda a: self._decode(a, mip), missing), strict=True
                ):
                    found[address] = image
                    self._put((address, mip), image)
        return [found[address] for address in addresses]

    def _decode(self, address: Address, mip: int) -> Image.Image:
        path = self.store.node_path(address)
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"{path}: unreadable node image: {exc}") from None
        if image.size != (self.size, self.size):
            raise InputError(
                f"{path}: node image is {image.width}x{image.height}, the manifest says "
                f"{self.size}x{self.size}"
            )
        return image.reduce(self.size // mip) if mip < self.size else image

    def _put(self, key: tuple[Address, int], image: Image.Image) -> None:
        self._images[key] = image
        self._bytes += image.width * image.height * 4
        while self._bytes > self.limit and len(self._images) > 1:
            _, dropped = self._images.popitem(last=False)
            self._bytes -= dropped.width * dropped.height * 4


@dataclass
class _Region:
    """Nodes of one depth pasted side by side at ``side`` pixels each, as YUV planes, with `PAD`
    pixels of background beyond each side that lies on the canvas edge. Region pixel (0, 0) is
    canvas point ``(left, top)``; ``scale`` region pixels make one canvas pixel."""

    depth: int
    side: int
    row0: int
    col0: int
    rows: int
    cols: int
    span: int
    left: float
    top: float
    scale: float
    planes: tuple[Image.Image, Image.Image, Image.Image]

    def covers(self, area: View) -> bool:
        """Whether ``area`` (inside the canvas) lies within this region's nodes."""
        return (
            area.left >= self.col0 * self.span
            and area.right <= (self.col0 + self.cols) * self.span
            and area.top >= self.row0 * self.span
            and area.bottom <= (self.row0 + self.rows) * self.span
        )

    def sample(self, area: View, width: int, height: int) -> tuple[Image.Image, ...]:
        """Resample the canvas ``area`` to width x height planes (bilinear, antialiased when
        reducing). Past the canvas edge, by less than the padding, the area shows background."""
        luma = self.planes[0]
        left, top, right, bottom = (
            min(max((area.left - self.left) * self.scale, 0.0), luma.width),
            min(max((area.top - self.top) * self.scale, 0.0), luma.height),
            min(max((area.right - self.left) * self.scale, 0.0), luma.width),
            min(max((area.bottom - self.top) * self.scale, 0.0), luma.height),
        )
        half = (left / 2, top / 2, right / 2, bottom / 2)
        y = luma.resize((width, height), Image.Resampling.BILINEAR, box=(left, top, right, bottom))
        u, v = (
            plane.resize((width // 2, height // 2), Image.Resampling.BILINEAR, box=half)
            for plane in self.planes[1:]
        )
        return y, u, v


class FrameRenderer:
    """Renders views of a build's canvas from its node images, one frame at a time.

    The canvas is drawn where the view holds it and `BACKGROUND` elsewhere (the opening view
    shows the whole mosaic fitted to the frame's short side). For the canvas part it picks the
    shallowest depth whose nodes are at least as sharp as the frame
    (`level_for`: no blurry upscale where a sharper node exists), pastes the nodes around the view,
    each scaled once to a common side of 1x to `OVERSAMPLE` x the frame's resolution, into a region,
    converts that to YUV once, and resamples each following frame from it until the camera needs
    a sharper region or leaves it. Over the last ``blend`` of a level (in zoom) before the next
    depth takes over, that depth's region (its nodes still reduced, never enlarged) is faded in,
    so a node never pops into its children. A node the build did not expand (focus) is cut from
    its deepest stored ancestor. Memory: at most two regions (the level shown and the one fading
    in) and a byte-capped cache of decoded nodes, which renderers of one build can share (pass
    one renderer's ``nodes`` to another) so that a node decoded for one serves both;
    ``threads`` decode its nodes.
    """

    def __init__(
        self, store: Store, plan: Plan, width: int, height: int, blend: float = BLEND,
        cache_bytes: int = NODE_CACHE_BYTES, nodes: NodeCache | None = None,
        threads: int = DECODE_THREADS,
    ) -> None:
        self.store, self.plan, self.width, self.height = store, plan, width, height
        self.blend = blend
        self.nodes = (nodes if nodes is not None
                      else NodeCache(store, plan.size, cache_bytes, threads))
        self._background = background_planes(width, height)
        self._regions: dict[int, _Region] = {}
        self.regions_built = 0

    def render(self, view: View) -> Planes:
        """The frame showing ``view``: the canvas where the view holds it, `BACKGROUND` around.

        Raises InputError for a node image that cannot be read.
        """
        part = canvas_part(self.plan, self.width, self.height, view, self.blend)
        if part is None:
            return Planes(*(plane.copy() for plane in self._background))
        if part.rect == (0, 0, self.width, self.height):
            return self._render_canvas(part)
        x0, y0, x1, y1 = part.rect
        frame = Planes(*(plane.copy() for plane in self._background))
        inner = self._render_canvas(part)
        frame.y[y0:y1, x0:x1] = inner.y
        for plane, half in ((frame.u, inner.u), (frame.v, inner.v)):
            plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = half
        return frame

    def _render_canvas(self, part: CanvasPart) -> Planes:
        """The pixels of ``part.rect`` (at most a pixel or two past the canvas edge, which show
        background): its depth's region resampled, the next depth's blended in."""
        x0, y0, x1, y1 = part.rect
        keep = {part.depth, part.depth + 1} if part.weight > 0 else {part.depth}
        self._regions = {d: r for d, r in self._regions.items() if d in keep}
        region = self._region(part.inside, part.pixel, part.depth)
        planes = region.sample(part.area, x1 - x0, y1 - y0)
        if part.weight > 0:
            deeper = self._region(part.inside, part.pixel, part.depth + 1)
            planes = tuple(
                Image.blend(a, b, part.weight)
                for a, b in zip(planes, deeper.sample(part.area, x1 - x0, y1 - y0), strict=True)
            )
        return Planes(*(np.asarray(plane) for plane in planes))

    def _region(self, area: View, pixel: float, depth: int) -> _Region:
        """The region of ``depth`` for this frame: the current one while it covers the area at a
        sharp enough (but not needlessly large) scale, else a new one."""
        side = ladder_side(self.plan.size, self.plan.span(depth), pixel)
        region = self._regions.pop(depth, None)
        if region is None or region.side != side or not region.covers(area):
            region = self._build_region(area, depth, side)
            self.regions_built += 1
        self._regions[depth] = region
        return region

    def _build_region(self, area: View, depth: int, side: int) -> _Region:
        # 1. the nodes of this depth under the area and a margin around it
        span = self.plan.span(depth)
        cells = self.plan.canvas_size // span
        _, row0, row1, col0, col1 = block = region_cells(self.plan, area, depth)
        rows, cols = row1 - row0, col1 - col0
        # 2. paste each, scaled to side x side, with background padding at the canvas edges
        pad_left, pad_top = PAD * (col0 == 0), PAD * (row0 == 0)
        pad_right, pad_bottom = PAD * (col1 == cells), PAD * (row1 == cells)
        mosaic = Image.new(
            "RGB", (cols * side + pad_left + pad_right, rows * side + pad_top + pad_bottom),
            BACKGROUND,
        )
        spots = block.spots()
        addresses = [address_at(self.plan, depth, row, col) for row, col in spots]
        stored = [address for address in addresses if self.store.has(address)]
        mip = mip_for(self.plan.size, side)
        images = dict(zip(stored, self.nodes.get_many(stored, mip), strict=True))
        for (row, col), address in zip(spots, addresses, strict=True):
            image = images.get(address)
            tile = self._cut(address, side) if image is None else _fit(image, side)
            mosaic.paste(tile, ((col - col0) * side + pad_left, (row - row0) * side + pad_top))
        mosaic = _even(mosaic)
        # 3. to YUV once; frames resample the planes
        planes = rgb_to_planes(mosaic)
        del mosaic
        y, u, v = (Image.fromarray(np.ascontiguousarray(p)) for p in planes)
        scale = side / span
        return _Region(
            depth=depth, side=side, row0=row0, col0=col0, rows=rows, cols=cols, span=span,
            left=col0 * span - pad_left / scale, top=row0 * span - pad_top / scale,
            scale=scale, planes=(y, u, v),
        )

    def _cut(self, address: Address, side: int) -> Image.Image:
        """A node the build did not store, cut from its deepest stored ancestor."""
        ancestor = self.store.deepest_available(address)
        ax, ay = self.plan.origin(ancestor)
        nx, ny = self.plan.origin(address)
        share = self.plan.span(len(address)) / self.plan.span(len(ancestor))
        mip = mip_for(self.plan.size, math.ceil(side / share))
        image = self.nodes.get_many([ancestor], mip)[0]
        scale = image.width / self.plan.span(len(ancestor))
        reach = self.plan.span(len(address)) * scale
        left, top = (nx - ax) * scale, (ny - ay) * scale
        return image.resize(
            (side, side), Image.Resampling.BILINEAR, box=(left, top, left + reach, top + reach)
        )


def _even(image: Image.Image) -> Image.Image:
    """The image with its last column / row repeated where a side is odd (4:2:0 needs even)."""
    width, height = image.width + image.width % 2, image.height + image.height % 2
    if (width, height) == image.size:
        return image
    even = Image.new(image.mode, (width, height))
    even.paste(image, (0, 0))
    if width > image.width:
        even.paste(image.crop((image.width - 1, 0, image.width, image.height)), (image.width, 0))
    if height > image.height:
        even.paste(even.crop((0, image.height - 1, width, image.height)), (0, image.height))
    return even


def _fit(image: Image.Image, side: int) -> Image.Image:
    """A square node image at ``side`` pixels (box-reduced first when much larger)."""
    if image.width == side:
        return image
    return image.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)

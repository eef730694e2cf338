"""Wrapped canvases, model-free: the ``wrap`` key's checks and a panorama's photo-sphere metadata.

``wrap = "x"`` joins the left and right edges (a 360° panorama), ``"xy"`` also the top and
bottom (a tileable texture); the torch side is `hypermosaic.pipelines.canvas.wrap`. A canvas
twice as wide as high that wraps in x only is an equirectangular photo sphere: its images carry
Google's GPano XMP (`gpano_xmp`), which photo-sphere viewers read. Any other wrapped aspect is a
cylindrical panorama or a texture and carries none.
"""

from __future__ import annotations

from typing import Literal

from hypermosaic.errors import InputError

__all__ = ["Wrap", "check_wrap", "check_wrap_window", "gpano_xmp", "is_photo_sphere"]

Wrap = Literal["none", "x", "xy"]


def _sides(wrap: str, height: int, width: int) -> list[tuple[str, int]]:
    """The wrapped sides, ``(name, pixels)``."""
    return [("width", width)] * ("x" in wrap) + [("height", height)] * ("y" in wrap)


def check_wrap(wrap: str, height: int, width: int, window_size: int | None, grid: bool) -> None:
    """ValueError naming ``wrap`` for a wrapped canvas that cannot close: a ``[grid]`` (its
    tiles end at the canvas's edges), or a ``window_size`` longer than a wrapped side."""
    if wrap == "none":
        return
    if grid:
        raise ValueError(f'wrap: "{wrap}" needs regions or a [background]; a [grid]\'s tiles '
                         "end at the canvas's edges and cannot go round it")
    if window_size is not None:
        check_wrap_window(wrap, window_size, height, width, error=ValueError)


def check_wrap_window(wrap: str, window: int, height: int, width: int,
                      error: type[Exception] = InputError) -> None:
    """``error`` naming ``wrap`` when the sliding ``window`` (px) is longer than a wrapped side,
    so that windows could not go round it without seeing the same pixels twice."""
    for name, side in _sides(wrap, height, width):
        if window > side:
            raise error(
                f'wrap: "{wrap}" needs a {name} of at least the {window} px window (the '
                f"{name} is {side} px); paint a wider panorama or give a smaller window_size"
            )


def is_photo_sphere(wrap: str, height: int, width: int) -> bool:
    """Whether an image is a full equirectangular sphere: wrapped in x only, width = 2 x height."""
    return wrap == "x" and width == 2 * height


def gpano_xmp(width: int, height: int) -> bytes:
    """The XMP packet of a full equirectangular panorama of ``width`` x ``height`` pixels
    (Google's GPano namespace, as photo-sphere viewers read it)."""
    fields = {
        "ProjectionType": "equirectangular",
        "UsePanoramaViewer": "True",
        "CroppedAreaImageWidthPixels": width,
        "CroppedAreaImageHeightPixels": height,
        "FullPanoWidthPixels": width,
        "FullPanoHeightPixels": height,
        "CroppedAreaLeftPixels": 0,
        "CroppedAreaTopPixels": 0,
    }
    attributes = "".join(f'\n    GPano:{key}="{value}"' for key, value in fields.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:GPano="http://ns.google.com/photos/1.0/panorama/"{attributes}/>\n'
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()

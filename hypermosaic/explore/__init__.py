"""`hypermosaic explore`: a build's mosaic in the browser, generated live below what was built.

The viewer zooms without end: nodes its view needs and the store lacks are made on the build's
Dask pool while it looks, with the build's own task code (`hypermosaic.build.NodeMaker`), so
they equal a batch build's and a later ``hypermosaic build --depth N`` reuses them. Entry
point: `explore_build`. Its pure plan (`hypermosaic.explore.plan`) says what a view shows and
lacks, its scheduler (`hypermosaic.explore.scheduler`) makes it fairly, its web side
(`hypermosaic.explore.app`) talks to the page.
"""

from __future__ import annotations

from hypermosaic.explore.run import explore_build

__all__ = ["explore_build"]

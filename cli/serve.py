"""`hypermosaic serve OUT_DIR`: serve a build's viewer read-only on this machine."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["serve_command"]


@click.command("serve")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than 127.0.0.1 exposes the build to the network.")
@click.option("--verbose", is_flag=True, help="Log every request to stderr.")
def serve_command(out_dir: Path, port: int, host: str, verbose: bool) -> None:
    """Serve OUT_DIR (a build's output) read-only and print the viewer's URL."""
    from hypermosaic.publish import serve_build  # imported when serving: --help stays quick

    serve_build(out_dir, host=host, port=port, verbose=verbose,
                on_ready=lambda url: click.echo(f"Serving {out_dir} at {url} (Ctrl-C to stop)"))
    click.echo("stopped", err=True)

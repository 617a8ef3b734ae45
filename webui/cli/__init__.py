"""The command line, `dermaseg`: serve, project, evaluate, bench, models."""

from dermaseg.webui.cli.main import main

__all__ = ["main"]

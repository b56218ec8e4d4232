"""HTTP server (OpenAPI-described JSON + multipart API) and the web page, over any pipeline."""

from .app import create_app
from .parse import ServerLimits

__all__ = ["ServerLimits", "create_app"]

"""HTTP server (OpenAPI-described JSON + multipart API) and the web page, over any pipeline."""

from .app import ServerLimits, create_app

__all__ = ["ServerLimits", "create_app"]

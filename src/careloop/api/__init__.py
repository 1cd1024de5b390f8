"""careloop HTTP API (FastAPI). OpenAPI at /openapi.json is the contract; docs at /docs."""

from careloop.api.app import create_app

__all__ = ["create_app"]

"""The customer portal's HTTP API (ASGI, FastAPI): no SQL in handlers."""

"""What operators see: request ids, logs, access lines, metrics and CORS, applied to every
route (the chat hot path included) by one ASGI middleware (`middleware.py`)."""

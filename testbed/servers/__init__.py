"""One module a protocol; each exposes ``start(ctx, name, config)`` returning a running server."""

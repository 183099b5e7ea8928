"""HTTP: the application factory, its routes, the fast path of POST /v1/batches, errors, the
OpenAPI document and the uvicorn server protocol."""

"""The HTTP edge: FastAPI app, request/response models, authentication, error mapping."""

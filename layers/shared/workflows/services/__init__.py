"""Use cases the HTTP edge calls: logic that is not the engine's, free of HTTP concerns."""

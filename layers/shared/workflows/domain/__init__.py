"""Domain models shared by the API edge and the engine."""

"""Models behind a server: each is a whole `Client` (glm_client/client.py), not an engine."""

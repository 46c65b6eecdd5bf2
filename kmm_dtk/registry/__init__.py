"""Talking to OCI / Docker registries: image references, pull credentials, trust, the HTTP client,
and reading image configs and files out of image layers without pulling the whole image."""

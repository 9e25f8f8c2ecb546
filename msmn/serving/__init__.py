"""Serving a checkpoint over HTTP: the `msmn-serve` REST API (FastAPI), the dynamic batching behind it,
and FHIR R4 output (also `msmn-code --format fhir`)."""

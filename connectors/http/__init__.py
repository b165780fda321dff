"""Push connectors: the plain HTTP ingest endpoint and the Firehose-compatible JSON API."""

"""Hostile clients: login throttling, headers, the production profile, escaping, join limits,
API fuzzing against the schema, and the metrics endpoint."""

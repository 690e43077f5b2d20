"""pairbert serving: an HTTP server with cross-request dynamic batching (`pairbert serve`) and a Ray Serve
deployment for many replicas. Needs `pairbert[serve]` (Ray Serve: `pairbert[ray]`); settings and schema
import without it (the CLI reads their defaults). Imports runtime only, never torch."""

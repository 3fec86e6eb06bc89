"""REST adapters: /sdapi/v1 (A1111-compatible) and /studio/v1 (jobs, extensions). Thin: they validate a
typed request, call a service, and shape the answer."""

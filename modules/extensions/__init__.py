"""The extension system: manifests, the versioned API handed to extensions, hooks, loading and installing."""

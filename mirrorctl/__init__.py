"""mirrorctl: the command line for a mirror-sync master's REST API."""

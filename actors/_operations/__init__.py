"""L4, operating a running system: status, workers' output, the control socket,
metrics.

See ARCHITECTURE.md at the repository's root for what each layer owns."""

"""L4, shared state: replicas, the master's service, and the stores.

See ARCHITECTURE.md at the repository's root for what each layer owns."""

"""L3, supervision: the pure restart decision, the supervisor, starting a child.

See ARCHITECTURE.md at the repository's root for what each layer owns."""

"""L1, the message core: links between processes, routing, lanes, the sending side,
pending asks, the name registry.

See ARCHITECTURE.md at the repository's root for what each layer owns."""

"""L4, listening sockets: listeners in the master, acceptors in workers.

See ARCHITECTURE.md at the repository's root for what each layer owns."""

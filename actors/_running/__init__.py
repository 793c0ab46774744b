"""L2, running things: cells (in-process actors), worker processes, the fork server,
starting OS processes.

See ARCHITECTURE.md at the repository's root for what each layer owns."""

"""L5, composition: ``open_system``, a worker's bootstrap, the fork server's process,
the CLI.

See ARCHITECTURE.md at the repository's root for what each layer owns."""

"""L4, the cluster: masters on several hosts joined through Redis Streams (membership, the
transport of tells, asks and replies, monitors and names across nodes).

See ARCHITECTURE.md at the repository's root for what each layer owns."""

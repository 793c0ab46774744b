"""L0, plain data and interfaces: errors, lifecycle events, the runtime's control
messages, ``Actor`` and ``ActorRef``, child specs, the tree's and the shared state's interfaces.

See ARCHITECTURE.md at the repository's root for what each layer owns."""

"""L1, the message core: links between processes (``_link``), routing (``_relay``), lanes
(``_lanes``), the sending side and its pending asks (``_outbox``, ``_asks``), delivery to
local actors (``_inbox``, ``_mailboxes``), the name registry (``_names``), events
(``_publisher``), the control table (``_control_table``); ``_router`` puts one process's
parts together.

See ARCHITECTURE.md at the repository's root for what each layer owns."""

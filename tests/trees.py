"""Supervision trees the tests build more than once."""

from __future__ import annotations

from actors import Actor, Backoff, SupervisorSpec, supervisor, worker


def three(member: type[Actor], strategy: str = "one_for_one", *, process: bool = False,
          max_restarts: int = 3, within: float = 5.0, backoff: Backoff | None = None
          ) -> SupervisorSpec:
    """``root``, a supervisor (``strategy``, ``max_restarts`` in ``within`` s, ``backoff``)
    of three ``member`` workers started in order, ``a``, ``b`` and ``c``: in this process, or
    each in a process of its own."""
    return supervisor(
        "root", strategy=strategy, max_restarts=max_restarts,  # type: ignore[arg-type]
        within=within, backoff=backoff,
        children=[worker(member, name=name, process=process) for name in ("a", "b", "c")],
    )

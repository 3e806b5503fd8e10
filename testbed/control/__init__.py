"""The control plane: a JSON API under /api/v1, live journal events and long-poll waits over a running testbed.

``attach`` adds the ``ControlService`` to a ``Testbed`` as a child service on a listener of its own, never behind
the fault wrapper.
"""

from __future__ import annotations

from testbed.defaults import CONTROL_PORT

#: Where ``twistd testbed`` without ``--config`` serves the control API (see ``testbed.defaults``).
DEFAULT_LISTEN = f"tcp:{CONTROL_PORT}:interface=127.0.0.1"


def attach(bed, listen: str | None = None):
    """Run the control API as a child service of ``bed`` on ``listen`` (default: the scenario's ``[control]``)."""
    from testbed.control.service import ControlService

    control = bed.scenario.control
    service = ControlService(bed, listen if listen is not None else control.listen, control.token)
    service.setServiceParent(bed)
    bed.control = service
    return service

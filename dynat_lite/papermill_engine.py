"""A papermill engine (``dynat``) whose client finds a waiting reply within a second.

papermill runs a notebook through nbclient, which waits for each cell's reply on the kernel's
ZeroMQ sockets inside an asyncio event loop. Now and then the loop is not woken when the reply
arrives: nbclient then sits idle until the cell's time limit, or for ever when there is none,
while the reply waits unread in the socket. It was seen with cells that display an
``ipywidgets.Output`` (each lesson's explorer does), which nbclient answers on the very socket
it is waiting on. Measured on a busy 2-core machine (the runs at the lowest priority beside
a test suite), a small notebook with one such cell: papermill's engine waited out the 60 s cell
limit in 5 runs of 15, this engine in none of 15.

This engine is papermill's own with one change: the client looks at its sockets again at least
every ``POLL_S`` seconds, so a missed wake-up costs at most that long. Use it by name::

    papermill --engine dynat LESSON.ipynb OUT.ipynb
    papermill.execute_notebook(LESSON, OUT, engine_name="dynat")

(the name is registered through the package's ``papermill.engine`` entry point).
"""
from __future__ import annotations

import time
from queue import Empty

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import DottedObjectName, Type

#: Longest time (seconds) the client waits on a socket before it looks at it again.
POLL_S = 1.0


class PollingChannel(AsyncZMQSocketChannel):
    """A kernel channel whose ``get_msg`` waits in slices of at most ``POLL_S`` seconds."""

    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_S if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await super().get_msg(timeout=min(POLL_S, left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class PollingKernelClient(AsyncKernelClient):
    """nbclient's kernel client with polling channels."""

    shell_channel_class = Type(PollingChannel)
    iopub_channel_class = Type(PollingChannel)
    stdin_channel_class = Type(PollingChannel)
    control_channel_class = Type(PollingChannel)


class PollingKernelManager(AsyncKernelManager):
    """The kernel manager nbclient uses, handing out :class:`PollingKernelClient`."""

    client_class = DottedObjectName(f"{__name__}.PollingKernelClient")
    client_factory = Type(PollingKernelClient)


def _engine() -> type:
    """papermill's nbclient engine, with :class:`PollingKernelManager`."""
    from papermill.engines import NBClientEngine

    class Engine(NBClientEngine):
        """papermill's nbclient engine, with :class:`PollingKernelManager`."""

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            kwargs.setdefault("kernel_manager_class", PollingKernelManager)
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    Engine.__module__, Engine.__qualname__ = __name__, "Engine"
    return Engine


def __getattr__(name: str):
    # ``Engine`` is built on first use: papermill imports this module while it registers its
    # engines, before its own import has finished.
    if name == "Engine":
        globals()["Engine"] = _engine()
        return globals()["Engine"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

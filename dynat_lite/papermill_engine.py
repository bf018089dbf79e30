"""A papermill engine (``dynat``) whose client finds a waiting reply within a second, and
which starts again a kernel that dies before its first reply.

papermill runs a notebook through nbclient, which waits for each cell's reply on the kernel's
ZeroMQ sockets inside an asyncio event loop. Now and then the loop is not woken when the reply
arrives: nbclient then sits idle until the cell's time limit, or for ever when there is none,
while the reply waits unread in the socket. It was seen with cells that display an
``ipywidgets.Output`` (each lesson's explorer does), which nbclient answers on the very socket
it is waiting on. Measured on a busy 2-core machine (the runs at the lowest priority beside
a test suite), a small notebook with one such cell: papermill's engine waited out the 60 s cell
limit in 5 runs of 15, this engine in none of 15.

This engine is papermill's own with two changes. The client looks at its sockets again at least
every ``POLL_S`` seconds, so a missed wake-up costs at most that long. And a kernel that dies
before its first reply is started again on new ports, up to ``START_TRIES`` starts in all. The
manager picks five free ports, closes them and writes them down for the kernel, which binds them
a second or two later, when its Python has started; on a busy machine another process (a
browser's connection, another kernel) can take one of them in between, and the kernel then exits
with "Address already in use" before it ever answers. nbclient reports that as "Kernel died
before replying to kernel_info" and gives up. One of the kit's test runs on a CI machine, running
several notebooks at once, ended on that report (the kernel's own message was not kept: a taken
port is the likely cause, not a seen one). Use it by name::

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
from traitlets import Bool, DottedObjectName, Type

#: Longest time (seconds) the client waits on a socket before it looks at it again.
POLL_S = 1.0
#: How many times a kernel that dies before its first reply is started, the first start included.
START_TRIES = 3
#: How long (seconds) the start check waits for a first reply before nbclient's own wait takes over.
START_CHECK_S = 60


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
    """The kernel manager nbclient uses, handing out :class:`PollingKernelClient`, whose
    ``start_kernel`` starts again a kernel that died before its first reply (see the module)."""

    client_class = DottedObjectName(f"{__name__}.PollingKernelClient")
    client_factory = Type(PollingKernelClient)
    # New ports on a restart with ``newports=True``: jupyter_client's port cache, made for a server
    # starting many kernels in one process, would hand the same ones back.
    cache_ports = Bool(False)

    async def start_kernel(self, **kwargs) -> None:
        """Start the kernel; while it dies before its first reply, start it again on new ports,
        up to ``START_TRIES`` starts in all. The last start is not checked: nbclient's own wait
        (and its ``startup_timeout``) judges it, and reports a kernel that died again."""
        await super().start_kernel(**kwargs)
        for _ in range(START_TRIES - 1):
            if not await self._died_at_start():
                return
            await self.restart_kernel(now=True, newports=True)

    async def _died_at_start(self) -> bool:
        """Whether the kernel exits before it answers a ``kernel_info`` request (any reply on
        its shell socket). A kernel still alive and silent after ``START_CHECK_S`` counts as
        not dead: nbclient's wait takes over from there."""
        client = self.client()
        client.start_channels()
        try:
            deadline = time.monotonic() + START_CHECK_S
            while time.monotonic() < deadline:
                client.kernel_info()
                try:
                    await client.shell_channel.get_msg(timeout=POLL_S)
                    return False
                except Empty:
                    if not await self.is_alive():
                        return True
            return False
        finally:
            client.stop_channels()


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

"""The ``dynat`` papermill engine: its client finds a reply that came while its event loop slept.

A lost wake-up is simulated with a real ZeroMQ socket whose ``poll`` misses the first event: it
waits out its whole timeout (for ever, when it has none) and reports nothing, although the message
is already in the socket.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from queue import Empty

import pytest
import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session

from dynat_lite import papermill_engine
from dynat_lite.papermill_engine import PollingChannel

FIXTURE = Path(__file__).parent / "fixtures" / "explorer.ipynb"


class MissesItsFirstWakeup(zmq.asyncio.Socket):
    """A socket whose first ``poll`` sees nothing until its timeout runs out."""

    missed = 0
    timeouts: list

    async def poll(self, timeout=None, flags=zmq.POLLIN):
        self.timeouts.append(timeout)
        if self.missed == 0:
            self.missed = 1
            if timeout is None:
                await asyncio.Event().wait()  # nothing ever wakes it
            await asyncio.sleep(timeout / 1000)
            return 0
        return await super().poll(timeout, flags)


@contextlib.asynccontextmanager
async def _channel(kind, send: bool):
    """A channel of class ``kind`` on a socket pair, and its socket; with ``send``, a message
    already waits in it."""
    ctx = zmq.asyncio.Context()
    receiver = ctx.socket(zmq.PAIR, socket_class=MissesItsFirstWakeup)
    receiver.timeouts = []
    port = receiver.bind_to_random_port("tcp://127.0.0.1")
    sender = ctx.socket(zmq.PAIR)
    sender.connect(f"tcp://127.0.0.1:{port}")
    try:
        session = Session()
        if send:
            session.send(sender, "execute_reply", {"status": "ok"})
            await asyncio.sleep(0.2)  # delivered: in the receiver's queue
        yield kind(receiver, session), receiver
    finally:
        receiver.close(linger=0)
        sender.close(linger=0)
        ctx.term()


def _polling_get_msg(send: bool, timeout: float | None):
    """``PollingChannel.get_msg(timeout)`` on a socket that misses its first wake-up:
    (the message, or the ``Empty`` raised; seconds waited; the timeouts of its polls)."""
    async def main():
        async with _channel(PollingChannel, send=send) as (channel, receiver):
            t0 = time.monotonic()
            try:
                got = await asyncio.wait_for(channel.get_msg(timeout=timeout), 10)
            except Empty as empty:
                got = empty
            return got, time.monotonic() - t0, receiver.timeouts
    return asyncio.run(main())


def test_the_plain_channel_waits_for_ever_on_a_missed_wakeup():
    async def main():
        async with _channel(AsyncZMQSocketChannel, send=True) as (channel, _):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(channel.get_msg(timeout=None), 2)
    asyncio.run(main())


def test_the_polling_channel_finds_the_waiting_reply(monkeypatch):
    monkeypatch.setattr(papermill_engine, "POLL_S", 0.2)
    msg, waited, timeouts = _polling_get_msg(send=True, timeout=None)
    assert msg["msg_type"] == "execute_reply" and msg["content"] == {"status": "ok"}
    assert waited < 2, f"found after {waited:.1f} s: one slice of 0.2 s was missed"
    assert timeouts[0] == 200 and all(t is not None and t <= 200 for t in timeouts)


def test_the_polling_channel_still_times_out_when_nothing_comes(monkeypatch):
    monkeypatch.setattr(papermill_engine, "POLL_S", 0.2)
    got, waited, timeouts = _polling_get_msg(send=False, timeout=0.7)
    assert isinstance(got, Empty)
    assert 0.7 <= waited < 2
    assert len(timeouts) >= 4 and all(t <= 200 for t in timeouts)  # 0.7 s in slices of 0.2 s


def test_papermill_knows_the_engine_by_its_name():
    from papermill.engines import papermill_engines

    assert papermill_engines.get_engine("dynat") is papermill_engine.Engine


@pytest.mark.slow
def test_a_notebook_with_an_output_widget_runs_on_the_engine(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    import nbformat

    used = []
    get_msg = PollingChannel.get_msg

    async def counted(self, timeout=None):
        used.append(timeout)
        return await get_msg(self, timeout)

    monkeypatch.setattr(PollingChannel, "get_msg", counted)
    monkeypatch.setenv("DYNAT_HEADLESS", "1")
    out = tmp_path / "explorer.ipynb"
    papermill.execute_notebook(str(FIXTURE), str(out), parameters={"PROFILE": "smoke"},
                               cwd=str(FIXTURE.parent), kernel_name="python3", engine_name="dynat",
                               execution_timeout=300, progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    assert "application/vnd.jupyter.widget-state+json" in nb.metadata.get("widgets", {})
    assert used, "the kernel client did not use the polling channels"


def test_an_nbgrader_course_autogrades_with_the_polling_client():
    """nbgrader's autograde executes the lessons through nbclient too: the course configuration
    the kit gives (``nbgrader_stubs.configure``) hands it the polling kernel manager."""
    pytest.importorskip("nbgrader")
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute
    from traitlets.config import Config

    from dynat_lite import nbgrader_stubs

    c = Config()
    nbgrader_stubs.configure(c)
    chosen = c.Autograde.autograde_preprocessors
    default = Autograde.class_traits()["autograde_preprocessors"].default()
    assert len(chosen) == len(default) and Execute not in chosen
    polling = [p for p in chosen if p not in default]
    assert len(polling) == 1 and issubclass(polling[0], Execute)
    assert polling[0]().kernel_manager_class is papermill_engine.PollingKernelManager
    assert Execute().kernel_manager_class is not papermill_engine.PollingKernelManager


# ------------------------------------------------ a kernel that dies before its first reply
@contextlib.contextmanager
def _ports_taken(monkeypatch, starts: int):
    """The first ``starts`` connection files give the kernel a shell port that another socket
    is listening on: such a kernel exits before it answers. Yields the shell ports written."""
    from jupyter_client import connect

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    written = []
    write = connect.write_connection_file

    def write_some_taken(fname=None, shell_port=0, **kwargs):
        fname, cfg = write(fname, shell_port=busy if len(written) < starts else shell_port,
                           **kwargs)
        written.append(cfg["shell_port"])
        return fname, cfg

    monkeypatch.setattr(connect, "write_connection_file", write_some_taken)
    try:
        yield busy, written
    finally:
        taken.close()


def _start(manager_class, client_class=None) -> str:
    """Start a kernel with ``manager_class``, wait for its first reply, run ``6 * 7`` in it;
    the result, as the kernel printed it."""
    shown: list = []

    async def main():
        manager = manager_class(kernel_name="python3")
        client = None
        try:
            await manager.start_kernel()
            client = manager.client() if client_class is None else client_class(
                parent=manager, **manager.get_connection_info(session=True))
            client.start_channels()
            await client.wait_for_ready(timeout=60)
            reply = await client.execute_interactive("print(6 * 7)", timeout=30,
                                                     output_hook=lambda msg: shown.append(msg))
            assert reply["content"]["status"] == "ok"
        finally:  # the kernel stopped and its connection file removed, pass or fail
            if client is not None:
                client.stop_channels()
            await manager.shutdown_kernel(now=True)
        return "".join(m["content"].get("text", "") for m in shown
                       if m["msg_type"] == "stream")
    return asyncio.run(main())


@pytest.mark.notebook
def test_a_kernel_whose_port_was_taken_dies_before_it_answers(monkeypatch):
    """What jupyter_client's own manager and client do: the kernel exits, nbclient's wait ends."""
    from jupyter_client.asynchronous.client import AsyncKernelClient
    from jupyter_client.manager import AsyncKernelManager

    with _ports_taken(monkeypatch, starts=1) as (busy, written):
        with pytest.raises(RuntimeError, match="Kernel died before replying"):
            _start(AsyncKernelManager, AsyncKernelClient)
    assert written == [busy]


@pytest.mark.notebook
def test_the_engine_starts_a_kernel_whose_port_was_taken_again_on_new_ports(monkeypatch):
    with _ports_taken(monkeypatch, starts=papermill_engine.START_TRIES - 1) as (busy, written):
        assert _start(papermill_engine.PollingKernelManager) == "42\n"
    assert written[:-1] == [busy] * (papermill_engine.START_TRIES - 1)
    assert len(written) == papermill_engine.START_TRIES and written[-1] != busy


@pytest.mark.notebook
def test_the_engine_gives_up_after_its_tries(monkeypatch):
    with _ports_taken(monkeypatch, starts=papermill_engine.START_TRIES) as (busy, written):
        with pytest.raises(RuntimeError, match="Kernel died before replying"):
            _start(papermill_engine.PollingKernelManager)
    assert written == [busy] * papermill_engine.START_TRIES

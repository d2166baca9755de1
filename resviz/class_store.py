"""Where the class lives: the Dask scheduler's key/value metadata when ``RESVIZ_SCHEDULER`` is set (every replica on
every host reads it), else this host's disk cache (``resviz.disk_cache``: the replicas of one host only).

``resviz.classroom.Classroom`` needs four things of a store: ``get``, ``set``, ``delete`` and ``with transact():``.

    store()    # the process's store: a SchedulerStore when RESVIZ_SCHEDULER is set, else the disk cache
    health()   # a sentence for the teacher's panel when the class is not shared by every host; None when it is

- ``SchedulerStore`` keeps each value (a JSON string, never a pickle) under ``["resviz-class", key]`` in the
  scheduler's metadata (``Client.set_metadata`` / ``get_metadata``: a dict in the scheduler's memory); ``transact()``
  holds the class's lock on the scheduler (Dask's semaphore extension, what ``distributed.Lock`` uses), so a vote's
  read-modify-write is one at a time across hosts.
- Every value it reads or writes is also kept in the disk cache of this host (only when it changed), so when the
  scheduler stops answering, the class goes on from the last state this host saw, with a logged warning and
  ``health()``'s sentence; nothing raises to a page. A keeper thread tries the scheduler again every
  ``RECONNECT_S``; back, the scheduler gets this host's values for the keys the host changed meanwhile and for the
  keys it lost (a restarted scheduler starts empty), and the class is shared again. Two hosts that changed the same
  key meanwhile (votes cast on both): the last one back wins.
- Without ``RESVIZ_SCHEDULER`` nothing here imports Dask.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid

from resviz import disk_cache

log = logging.getLogger("resviz")

SCHEDULER_ENV = "RESVIZ_SCHEDULER"  # the same setting as resviz.cluster's: one scheduler for runs and the class
ROOT = "resviz-class"  # the scheduler's metadata key the class lives under (not a task key: never cleaned up)
LOCK = "resviz-class-lock"
RECONNECT_S = 10.0  # how often a store without its scheduler tries again
CALL_S = 5.0  # the most one call to the scheduler may take before the class goes on without it
LEASE_S = 15.0  # a lock held by a replica that died is free again after this (Dask's default is 30 s; it must be
# longer than the scheduler's lease-validation-interval, 10 s by default)
LOCK_WAIT_S = LEASE_S + 15.0  # the longest a transaction waits for the lock: past a dead holder's lease and the
# scheduler's next look at it


class SchedulerStore:
    """The class's key/value store on a Dask scheduler, with this host's disk cache while it cannot be reached."""

    def __init__(self, address: str, local=None, connect_timeout: float = 5.0):
        self.address, self.connect_timeout = address, connect_timeout
        self.local = local if local is not None else disk_cache.cache()
        self.client = None
        self._lease: _Lease | None = None  # the class's lock, through this connection
        self._up = False  # connected, and the keeper has handed the scheduler this host's values
        self.down_since: float | None = None
        self._seen: dict[str, str | None] = {}  # key -> the value last read or written (what the local copy holds)
        self._changed_here: set[str] = set()  # keys this process wrote while the scheduler was away
        self._here = threading.RLock()  # one transaction of this process at a time (then one across hosts)
        self._depth = 0  # nested transact() calls of the thread holding ``_here``
        self._closed = threading.Event()
        self._connect()
        self._keeper = threading.Thread(target=self._keep, daemon=True, name="resviz-class-store")
        self._keeper.start()

    @property
    def connected(self) -> bool:
        """Whether the class is on the scheduler now (a client that lost it says so at once: logged here)."""
        if self._up and (self.client is None or self.client.status != "running"):
            self._lost(ConnectionError(f"the client is {self.client.status if self.client else 'closed'}"))
        return self._up

    # --- the store's interface --------------------------------------------------------------------------------------

    def get(self, key: str, default=None):
        if self.connected:
            try:
                value = self._call(self.client.scheduler.get_metadata, keys=[ROOT, key], default=None)
            except Exception as e:  # noqa: BLE001 - any failure of the scheduler: the class goes on here
                self._lost(e)
            else:
                self._keep_here(key, value)
                return default if value is None else value
        return self.local.get(key, default)

    def set(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"the class keeps JSON strings, not {type(value).__name__}")
        self._put(key, value)

    def delete(self, key: str) -> None:
        self._put(key, None)

    @contextlib.contextmanager
    def transact(self):
        """One read-modify-write at a time: on every host (the scheduler's lock), or on this host while it is down."""
        with self._here:
            self._depth += 1
            try:
                if self._depth > 1:
                    yield
                    return
                if self.connected and self._acquire():
                    try:
                        yield
                    finally:
                        self._release()
                else:
                    with self.local.transact():
                        yield
            finally:
                self._depth -= 1

    def health(self) -> str | None:
        """A sentence for the teacher while the scheduler cannot be reached; None while the class is shared."""
        if self.connected:
            return None
        since = time.strftime("%H:%M", time.localtime(self.down_since or time.time()))
        return (f"The class's scheduler ({self.address}) has not answered since {since}: the class (presenting, "
                "votes, who is here) is kept on this host only until it is back.")

    def close(self) -> None:
        self._closed.set()
        client, self.client, self._up = self.client, None, False
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=2)
        self._keeper.join(5)

    # --- the scheduler ----------------------------------------------------------------------------------------------

    def _put(self, key: str, value: str | None) -> None:
        if self.connected:
            try:
                self._call(self.client.scheduler.set_metadata, keys=[ROOT, key], value=value)
            except Exception as e:  # noqa: BLE001
                self._lost(e)
            else:
                return self._keep_here(key, value)
        self._seen[key] = value
        self._changed_here.add(key)
        self.local.set(key, value) if value is not None else self.local.delete(key)

    def _keep_here(self, key: str, value: str | None) -> None:
        """This host's copy of what the scheduler holds, written only when it changed (reads come 4x a second)."""
        if key in self._seen and self._seen[key] == value:
            return
        self._seen[key] = value
        self.local.set(key, value) if value is not None else self.local.delete(key)

    def _call(self, method, **kwargs):
        return self.client.sync(method, callback_timeout=CALL_S, **kwargs)

    def _acquire(self) -> bool:
        try:
            self._lease.acquire()
            return True
        except Exception as e:  # noqa: BLE001
            self._lost(e)
            return False

    def _release(self) -> None:
        self._lease.release()

    def _lost(self, error: BaseException) -> None:
        if self._up:
            self._up = False
            self.down_since = time.time()
            log.warning("resviz: the class's scheduler %s stopped answering (%s: %s); the class is kept on this "
                        "host until it is back", self.address, type(error).__name__, error)

    def _connect(self) -> None:
        """Connect (at start, and again while down); then ``_merge``, with this process's transactions held back
        (only for that: a slow connect blocks nobody)."""
        old, client = self.client, None
        try:
            from distributed import Client  # inside: Dask missing (the 'cluster' extra) is one more reason to stay

            client = old if old is not None and old.status == "running" else Client(
                self.address, timeout=self.connect_timeout, set_as_default=False)
            try:
                lease = _Lease(client, self._lease.abandoned if self._lease is not None else ())
            except Exception:
                if client is not old:
                    with contextlib.suppress(Exception):
                        client.close(timeout=1)
                raise
            with self._here:
                self.client, self._lease = client, lease
                if old is not None and old is not client:
                    with contextlib.suppress(Exception):
                        old.close(timeout=1)
                self._merge()
                self._up, self.down_since = True, None
        except Exception as e:  # noqa: BLE001 - unreachable (at start or still): the class stays here
            first, self.down_since = self.down_since is None, self.down_since or time.time()
            (log.warning if first else log.debug)(  # one warning an outage, not one every RECONNECT_S
                "resviz: the class's scheduler %s cannot be reached (%s: %s); the class is kept on this host",
                self.address, type(e).__name__, e)
            return
        log.info("resviz: the class lives on the scheduler %s", self.address)

    def _merge(self) -> None:
        """Hand the scheduler what this host knows better: the keys this process changed while it was away (the
        teacher went on presenting here), and the keys it lacks (a restarted scheduler starts empty)."""
        if not self._seen:
            return
        self._lease.acquire()
        try:
            for key in list(self._seen):
                changed = key in self._changed_here
                if changed or self._call(self.client.scheduler.get_metadata, keys=[ROOT, key], default=None) is None:
                    value = self.local.get(key)
                    if changed or value is not None:
                        self._call(self.client.scheduler.set_metadata, keys=[ROOT, key], value=value)
            self._changed_here.clear()
        finally:
            self._release()

    def _keep(self) -> None:
        """Every second: notice a client that lost its scheduler; every ``RECONNECT_S`` while down, try again."""
        last_try = time.monotonic()
        while not self._closed.wait(1.0):
            if not self.connected and time.monotonic() - last_try >= RECONNECT_S:
                last_try = time.monotonic()
                self._connect()


class _Lease:
    """The class's lock on the scheduler: Dask's semaphore extension (what ``distributed.Lock`` uses) with one lease,
    and lease ids made here, so that a lease the scheduler granted after this side stopped waiting (a frozen
    scheduler that wakes up) is handed back at the next connection instead of blocking every host until it expires.
    No lease refresh: a transaction holds it for milliseconds, and ``LEASE_S`` frees it after a holder's death."""

    def __init__(self, client, abandoned=()):
        self.client, self.held, self.abandoned = client, None, set(abandoned)
        self._call(client.scheduler.semaphore_register, name=LOCK, max_leases=1, lease_timeout=LEASE_S)
        for lease in list(self.abandoned):  # unknown to a restarted scheduler: it logs that, and nothing else
            self._call(client.scheduler.semaphore_release, name=LOCK, lease_id=lease)
            self.abandoned.discard(lease)

    def acquire(self) -> None:
        """A first try that does not wait in the scheduler (a frozen scheduler costs ``CALL_S``, not
        ``LOCK_WAIT_S``), then, only while another holds it, a wait of up to ``LOCK_WAIT_S``."""
        for wait in (0, LOCK_WAIT_S):
            lease = uuid.uuid4().hex
            try:
                got = self._call(self.client.scheduler.semaphore_acquire, name=LOCK, timeout=wait, lease_id=lease,
                                 wait=wait)
            except BaseException:
                self.abandoned.add(lease)  # it may be granted when the scheduler answers again
                raise
            if got:
                self.held = lease
                return
        raise TimeoutError(f"the class's lock was not free for {LOCK_WAIT_S:.0f} s")

    def release(self) -> None:
        lease, self.held = self.held, None
        try:
            self._call(self.client.scheduler.semaphore_release, name=LOCK, lease_id=lease)
        except Exception:  # noqa: BLE001 - the scheduler went meanwhile: handed back at the next connection
            self.abandoned.add(lease)

    def _call(self, method, wait: float = 0.0, **kwargs):
        return self.client.sync(method, callback_timeout=wait + CALL_S, **kwargs)


_STORES: dict[str, SchedulerStore] = {}
_lock = threading.Lock()


def store():
    """The class's store for this process: on the scheduler of ``RESVIZ_SCHEDULER`` (one per process), else the
    disk cache (``resviz.disk_cache.cache()``, as before)."""
    address = os.environ.get(SCHEDULER_ENV)
    if not address:
        return disk_cache.cache()
    with _lock:
        if address not in _STORES:
            _STORES[address] = SchedulerStore(address, connect_timeout=float(
                os.environ.get("RESVIZ_SCHEDULER_TIMEOUT") or 5))
        return _STORES[address]


def health() -> str | None:
    """What the teacher's panel says about where the class lives; None when every host shares it."""
    address = os.environ.get(SCHEDULER_ENV)
    if not address:
        return ("The class (presenting, votes, who is here) lives in this server's disk cache: the replicas of one "
                "host share it, other hosts do not (set RESVIZ_SCHEDULER to share it across hosts).")
    with _lock:
        active = _STORES.get(address)
    return active.health() if active is not None else None

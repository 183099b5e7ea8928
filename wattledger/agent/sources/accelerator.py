"""What the accelerator sources beside NVML (``amdsmi``, ``hlml``) share.

A vendor library is imported when the source opens, never before (an agent without it stays
as light as ever, and one without the vendor's driver says so in one line). Static facts are
read once when a device is discovered; each sample then makes one pass over each device. A
reading the board does not support is absent (``None``), never 0, and is not asked for again;
a transient failure is absent this time and asked again next sample. A device that stops
answering is reported down while the others go on, and looked at again every sample.

Subclasses name the vendor's module and exception (``module_name``, ``error_name``) and say
how to initialise the library and count the devices (``_open_library``), who a device is and
its handle (``_identify``), how one sample of it reads (``_read``, through ``ask``) and which
of our exceptions a vendor exception is (``_classify``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from wattledger.agent.reading import DeviceReading
from wattledger.agent.sources.base import (
    DeviceLost,
    FieldUnsupported,
    SourceError,
    SourceSample,
    SourceUnavailable,
)
from wattledger.agent.sources.energycounter import EnergyCounter
from wattledger.contract import DEVICE_ID_MAX_LENGTH, DEVICE_MODEL_MAX_LENGTH, Device

log = logging.getLogger(__name__)

ImportModule = Callable[[str], ModuleType]


def classify(key: object, what: str, *, absent: Collection[object], lost: Collection[object],
             no_driver: Collection[object]) -> SourceError:
    """A vendor's error (its code or its name) as one of our exception types."""
    if key in absent:
        return FieldUnsupported(what)
    if key in lost:
        return DeviceLost(what)
    if key in no_driver:
        return SourceUnavailable(what)
    return SourceError(what)


def one_line(text: object) -> str:
    """A vendor's message on one line (AMD SMI's exceptions print over two)."""
    return " ".join(str(text).split())


def import_vendor(name: str, import_module: ImportModule, unavailable: str, hint: str = "") -> ModuleType:
    """The vendor module ``name``, imported now. What it prints while importing (AMD SMI's
    ctypes wrapper prints its loader error to stdout, then fails with a KeyError) is kept out
    of the agent's output and put into the one line of :class:`SourceUnavailable`."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            return import_module(name)
    except ImportError as exc:
        if exc.name == name:
            raise SourceUnavailable(f"{unavailable}: the Python package {name!r} is not installed"
                                    f"{hint}") from None
        raise SourceUnavailable(f"{unavailable}: {one_line(exc)}") from None
    except Exception as exc:  # the library under the package is missing or broken
        printed = said.getvalue().strip().splitlines()
        raise SourceUnavailable(f"{unavailable}: {one_line(printed[0] if printed else repr(exc))}") from None


def text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def device_id(value: str) -> str:
    return value[:DEVICE_ID_MAX_LENGTH]


def device_model(value: str) -> str:
    return value[:DEVICE_MODEL_MAX_LENGTH]


@dataclass(eq=False)
class Board:
    """What a source keeps about one device between samples."""

    index: int
    handle: Any
    info: Device
    unsupported: set[str] = field(default_factory=set)  # readings this board has not
    energy: EnergyCounter = field(default_factory=EnergyCounter)
    state: dict[str, Any] = field(default_factory=dict)  # a vendor's own between samples
    answered: bool = False  # this sample: something was answered already
    aliases: tuple[str, ...] = ()  # other ids it is known by (SourceSample.aliases)


class AcceleratorSource:
    name = "accelerator"
    #: what the logs call the library
    library = "the vendor library"
    #: True where the library has its own "device lost" code (HLML): every call that returns
    #: it takes the device down; False where a lost device only shows as I/O failures (AMD
    #: SMI): the first call of a sample decides, a later one is a transient failure
    lost_is_certain = True
    #: the vendor's Python module, its exceptions' base class, and how the one line of a
    #: machine without them starts
    module_name = ""
    error_name = ""
    unavailable = "no driver"
    install_hint = ""  # how to get the module, said when it is not installed

    def __init__(self, node: str, module: ModuleType | None = None,
                 import_module: ImportModule = importlib.import_module) -> None:
        self._node = node
        self._module = module  # injected by tests (a fake with the vendor's behaviour)
        self._import_module = import_module
        self._opened = False
        self._boards: list[Board | None] = []  # None: not discovered (did not answer)

    @property
    def lib(self) -> Any:
        """The vendor module, once loaded."""
        if self._module is None:
            self._module = import_vendor(self.module_name, self._import_module, self.unavailable,
                                         self.install_hint)
        return self._module

    # ------------------------------------------------------------------ for subclasses

    def _open_library(self) -> int:
        """Load and initialise the library (SourceUnavailable when it cannot be); how many
        devices it has."""
        raise NotImplementedError

    def _identify(self, index: int) -> tuple[Device, Any]:
        """Who the device is (read once) and the handle to ask it with; SourceError when it
        does not answer."""
        raise NotImplementedError

    def _read(self, board: Board, ts: float) -> DeviceReading:
        raise NotImplementedError

    def _classify(self, exc: Exception, what: str) -> SourceError:
        """The vendor's exception ``exc`` as ours."""
        raise NotImplementedError

    def _shut_down(self) -> None:
        raise NotImplementedError

    def _aliases(self, handle: Any) -> tuple[str, ...]:
        """Other ids a discovered device is known by (SourceSample.aliases); none by default."""
        return ()

    # ------------------------------------------------------------------ calls

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call the library; its errors come out as our exception types."""
        try:
            return fn(*args)
        except Exception as exc:
            error = getattr(self._module, self.error_name, None)
            if error is None or not isinstance(exc, error):
                raise
            raise self._classify(exc, getattr(fn, "__name__", "call")) from None

    def ask(self, board: Board, key: str, fn: Callable[..., Any] | None, *args: Any) -> Any:
        """One reading of one device; None if the board lacks it or it failed this time.
        DeviceLost propagates."""
        if key in board.unsupported or fn is None:
            return None
        try:
            value = self.call(fn, *args)
        except FieldUnsupported:
            board.unsupported.add(key)
            board.answered = True
            log.debug("%s: device %d has no %s", self.library, board.index, key)
            return None
        except DeviceLost as exc:
            if self.lost_is_certain or not board.answered:
                raise
            log.debug("%s: device %d %s failed: %s", self.library, board.index, key, exc)
            return None
        except SourceError as exc:  # a transient failure: absent this time, asked again next
            log.debug("%s: device %d %s failed: %s", self.library, board.index, key, exc)
            return None
        board.answered = True
        return value

    # ------------------------------------------------------------------ the Source interface

    def open(self) -> None:
        try:
            count = self._open_library()
            self._opened = True
            self._boards = [self._discover(i) for i in range(count)]
        except SourceError:
            raise
        except Exception as exc:  # bindings of another release than the library: a name missing...
            if self._opened:
                self.close()
            raise SourceUnavailable(f"{self.unavailable}: {type(exc).__name__}: {one_line(exc)}") from None
        found = [b for b in self._boards if b is not None]
        log.info("%s: %d device(s): %s", self.library, count,
                 ", ".join(f"{b.index}={b.info.model}" for b in found))

    def _discover(self, index: int) -> Board | None:
        try:
            info, handle = self._identify(index)
        except SourceError as exc:
            log.warning("%s: device %d does not answer (%s); reported down", self.library, index, exc)
            return None
        return Board(index, handle, info, aliases=self._aliases(handle))

    def close(self) -> None:
        if self._opened:
            self._shut_down()
        self._opened = False
        self._boards = []

    def sample(self, ts: float) -> SourceSample:
        out = SourceSample()
        for i, board in enumerate(self._boards):
            if board is None:
                board = self._boards[i] = self._discover(i)
                if board is None:
                    out.down.append(Device(id=f"{self._node}:{self.name}:gpu{i}", kind="gpu", index=i))
                    continue
            board.answered = False
            try:
                out.readings.append(self._read(board, ts))
            except DeviceLost:
                out.down.append(board.info)
        out.aliases.update((alias, b.info.id) for b in self._boards if b is not None for alias in b.aliases)
        return out

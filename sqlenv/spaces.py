"""``UnicodeText``: a Gymnasium ``Text`` space for SQL and database text, with every Gymnasium path.

Database values hold any Unicode character (``Kraków``, ``Zürich``, ``東京``), so the env's
observations and actions do too. Gymnasium's ``Text`` stores characters as indices into its charset,
which breaks three ways for such text: ``contains`` rejects them, ``flatten`` raises ``KeyError``, and
``AsyncVectorEnv``'s shared memory is read once when the vector env is built, so its text
observations stay empty forever. ``UnicodeText`` fixes each:

- ``contains``: any ``str`` within the length bounds; ``sample()`` still draws from ``charset``.
- ``flatten``/``unflatten``/``flatten_space``: Unicode code points + 1 in an ``int32`` array of
  ``max_length`` (0 pads), a ``Box(0, 0x110000)``, so ``FlattenObservation`` works and round-trips.
- shared memory: the same code-point encoding; the vector env's observation buffer is a live
  :class:`SharedTextView` that decodes on access, and copying it (``AsyncVectorEnv(copy=True)``, the
  default) gives a plain tuple of ``str``, exactly what the sync vector env returns.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.spaces import utils as space_utils
from gymnasium.vector.utils import shared_memory

__all__ = ["UnicodeText", "SharedTextView", "encode", "decode"]

MAX_CODE = 0x10FFFF + 1  # the largest flattened value: the last code point + 1


class UnicodeText(spaces.Text):
    """A ``Text`` space whose members may hold any Unicode character; ``sample()`` draws from
    ``charset``. Flattens to code points (see the module docstring)."""

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"


def encode(text: str, length: int) -> np.ndarray:
    """``text`` as ``length`` int32 values: code point + 1 per character, then zeros."""
    if len(text) > length:
        raise ValueError(f"text of {len(text)} characters does not fit a UnicodeText of max_length {length}")
    out = np.zeros(length, dtype=np.int32)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    out[: len(codes)] = codes.astype(np.int32) + 1
    return out


def decode(codes: np.ndarray) -> str:
    """The inverse of :func:`encode`: values up to the first 0, minus 1, as characters."""
    codes = np.asarray(codes)
    zeros = np.flatnonzero(codes == 0)
    used = codes[: zeros[0]] if zeros.size else codes
    return (used.astype("<u4") - 1).tobytes().decode("utf-32-le", "surrogatepass")


# --------------------------------------------------------------------------- flattening


@space_utils.flatdim.register(UnicodeText)
def _flatdim(space: UnicodeText) -> int:
    return space.max_length


@space_utils.flatten.register(UnicodeText)
def _flatten(space: UnicodeText, x: str) -> np.ndarray:
    return encode(x, space.max_length)


@space_utils.unflatten.register(UnicodeText)
def _unflatten(space: UnicodeText, x: np.ndarray) -> str:
    return decode(x)


@space_utils.flatten_space.register(UnicodeText)
def _flatten_space(space: UnicodeText) -> spaces.Box:
    return spaces.Box(low=0, high=MAX_CODE, shape=(space.max_length,), dtype=np.int32)


# --------------------------------------------------------------------------- AsyncVectorEnv shared memory


class SharedTextView(Sequence):
    """The text of ``n`` sub-environments in shared memory, decoded on every access.

    ``AsyncVectorEnv`` builds its observation buffer once and returns it (or a deep copy of it) after
    every step; a view keeps that buffer live. ``copy.deepcopy``, ``copy.copy`` and pickling give a
    plain ``tuple`` of ``str``; ``==`` compares with any sequence of strings.
    """

    def __init__(self, memory, length: int, n: int):
        self._memory, self._length, self._n = memory, length, n

    def _codes(self) -> np.ndarray:
        return np.frombuffer(self._memory.get_obj(), dtype=np.int32).reshape((self._n, self._length))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self)[index]
        return decode(self._codes()[index])

    def __iter__(self):
        codes = self._codes()
        return iter([decode(row) for row in codes])

    def __eq__(self, other) -> bool:
        if isinstance(other, (SharedTextView, tuple, list)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # its content changes

    def __copy__(self) -> tuple[str, ...]:
        return tuple(self)

    def __deepcopy__(self, memo) -> tuple[str, ...]:
        return tuple(self)

    def __reduce__(self):
        return tuple, (tuple(self),)

    def __repr__(self) -> str:
        return f"SharedTextView{tuple(self)!r}"


@shared_memory.create_shared_memory.register(UnicodeText)
def _create_memory(space: UnicodeText, n: int = 1, ctx=multiprocessing):
    return ctx.Array(np.dtype(np.int32).char, n * space.max_length)


@shared_memory.read_from_shared_memory.register(UnicodeText)
def _read_memory(space: UnicodeText, memory, n: int = 1) -> SharedTextView:
    return SharedTextView(memory, space.max_length, n)


@shared_memory.write_to_shared_memory.register(UnicodeText)
def _write_memory(space: UnicodeText, index: int, value: str, memory) -> None:
    size = space.max_length
    destination = np.frombuffer(memory.get_obj(), dtype=np.int32)
    np.copyto(destination[index * size:(index + 1) * size], encode(value, size))

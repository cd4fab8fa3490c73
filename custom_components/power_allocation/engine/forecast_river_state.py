"""What river's objects have learnt, as plain JSON, and back into fresh objects of the same kind.

river's own advice for saving a model is pickle, which runs code from the file it reads. Here only
numbers, texts and their containers are written, attribute by attribute, each tagged with its
type (a deque with its length, an array with its dtype, shape and memory order, a numpy scalar as
numpy gave it); reading builds nothing but those. The values are read from and written back into
the objects' attributes, some of them river's private ones, whose layout changes between river
releases (`BayesianLinearRegression` kept its posterior in per-pair dicts up to 0.25, in arrays
since), so a state names the river it was written with and is refused by any other.

Anything the reader cannot take raises `ForecasterStateError`: the caller starts learning afresh.
"""

from __future__ import annotations

import base64
import inspect
import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import river
from river import base

RIVER_VERSION: str = river.__version__  # type: ignore[attr-defined]
# Array dtypes river's state holds; anything else in a stored array is refused.
_ARRAY_DTYPES = frozenset({"float64", "int64"})
# A forecaster's river models have a handful of features: a larger stored array is no state of
# theirs (and must not be allocated, let alone multiplied out).
_ARRAY_MAX_SIZE = 4096


class ForecasterStateError(ValueError):
    """A stored forecaster state that cannot be restored here (another state version, another
    river version, or malformed): the forecaster starts learning afresh."""


def learnt_state(model: Any, names: Iterable[str]) -> dict[str, Any]:
    """`model`'s attributes `names`, as JSON can hold them."""
    return {name: _encode(getattr(model, name)) for name in names}


def restore_learnt(model: Any, state: Any, names: Iterable[str]) -> None:
    """Writes `learnt_state`'s output back into `model`, freshly built with the same parameters.

    Each value must have the type the fresh object holds there: a state of another layout is
    refused rather than half read. Deques are refilled in place, so their own type (river's
    Holt-Winters components are deques) and length are kept.
    """
    names = list(names)
    if not isinstance(state, Mapping) or sorted(state) != sorted(names):
        raise ForecasterStateError(f"expected river attributes {sorted(names)}")
    for name in names:
        fresh = getattr(model, name)
        if isinstance(fresh, base.Base):
            # A river object inside (Page-Hinkley's running mean): restored in place, in kind.
            stored = state[name]
            if not isinstance(stored, Mapping) or stored.get("river") != type(fresh).__name__:
                raise ForecasterStateError(f"{name}: not a stored {type(fresh).__name__}")
            restore_learnt(fresh, stored.get("learnt"), learnt_names(fresh))
            continue
        value = _decode(state[name])
        if isinstance(fresh, deque):
            if not isinstance(value, deque) or value.maxlen != fresh.maxlen:
                raise ForecasterStateError(f"{name}: not a deque of length {fresh.maxlen}")
            fresh.clear()
            fresh.extend(value)
        elif type(value) is not type(fresh) and not (_is_number(value) and _is_number(fresh)):
            raise ForecasterStateError(
                f"{name}: {type(value).__name__} where river holds {type(fresh).__name__}"
            )
        else:
            setattr(model, name, value)


def learnt_names(model: Any) -> list[str]:
    """`model`'s attributes other than its constructor's parameters and the methods it picked
    from them (Page-Hinkley's test for its mode): what it has learnt, under whatever names the
    installed river gives them."""
    parameters = inspect.signature(type(model)).parameters
    return [
        name
        for name, value in vars(model).items()
        if name not in parameters and not inspect.ismethod(value)
    ]


def _is_number(value: Any) -> bool:
    # A running extreme starts as -1 and is a float once learnt: either is a number to river.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _encode(value: Any) -> Any:
    # bool before int: a bool is an int to isinstance.
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, base.Base):
        return {"river": type(value).__name__, "learnt": learnt_state(value, learnt_names(value))}
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no infinity (Home Assistant's writer turns it into null); a running minimum
        # starts at one.
        return {"float": repr(value)}
    if isinstance(value, np.ndarray):
        order: Literal["C", "F"] = (
            "F" if value.flags.f_contiguous and not value.flags.c_contiguous else "C"
        )
        return {
            "array": base64.b64encode(value.tobytes(order=order)).decode("ascii"),
            "dtype": str(value.dtype),
            "shape": list(value.shape),
            "order": order,
        }
    if isinstance(value, np.generic):
        return {"numpy": str(value.dtype), "value": value.item()}
    if isinstance(value, int | float):
        return value
    if isinstance(value, deque):
        return {"deque": [_encode(v) for v in value], "maxlen": value.maxlen}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise TypeError(f"no plain form for a {type(value).__name__}")


def _decode(value: Any) -> Any:
    """The value `_encode` wrote; None only at the top (JSON writers turn NaN into null, and a
    null inside a container is no number river can learn from)."""
    if value is None:
        return None
    return _decode_inner(value)


def _decode_inner(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_decode_inner(v) for v in value]
    if not isinstance(value, Mapping):
        raise ForecasterStateError(f"not a stored value: {value!r}")
    try:
        if "array" in value:
            dtype = value["dtype"]
            if dtype not in _ARRAY_DTYPES:
                raise ForecasterStateError(f"array of {dtype!r}")
            order = value["order"]
            if order not in ("C", "F"):
                raise ForecasterStateError(f"array order {order!r}")
            flat = np.frombuffer(base64.b64decode(value["array"], validate=True), dtype=dtype)
            if flat.size > _ARRAY_MAX_SIZE:
                raise ForecasterStateError(f"array of {flat.size} values")
            # A writable copy in the stored memory order: river updates some arrays in place
            # (BLAS `dger` on a Fortran-ordered covariance).
            return np.array(flat.reshape(value["shape"], order=order), order=order)
        if "float" in value:
            if value["float"] not in ("inf", "-inf", "nan"):
                raise ForecasterStateError(f"not a non-finite float: {value['float']!r}")
            return float(value["float"])
        if "numpy" in value:
            if value["numpy"] not in _ARRAY_DTYPES:
                raise ForecasterStateError(f"numpy scalar of {value['numpy']!r}")
            return np.dtype(value["numpy"]).type(value["value"])
        if "deque" in value:
            maxlen = value["maxlen"]
            if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int)):
                raise ForecasterStateError(f"deque length {maxlen!r}")
            return deque((_decode_inner(v) for v in value["deque"]), maxlen=maxlen)
        if "tuple" in value:
            return tuple(_decode_inner(v) for v in value["tuple"])
        if "dict" in value:
            return {_decode_inner(k): _decode_inner(v) for k, v in value["dict"]}
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, ForecasterStateError):
            raise
        raise ForecasterStateError(f"malformed stored value: {err!r}") from err
    raise ForecasterStateError(f"not a stored value: {sorted(value)!r}")

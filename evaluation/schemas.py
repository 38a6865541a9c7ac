"""Checking objects built from configs against their schema dataclasses, as Hydra checks a
composed config, for objects constructed directly in Python (tests, notebooks): the built
classes subclass their schema and call :func:`check_fields` on construction. Light (omegaconf
only): config modules import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


def checked(schema: type[T], values: Mapping[str, Any], where: str) -> T:
    """``values`` as an instance of dataclass ``schema``, checked as Hydra checks a config:
    an unknown key, a missing value or a wrong type raises ``ValueError`` naming
    ``<where>.<key>``; nested mappings become their dataclasses."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), dict(values)))
    except OmegaConfBaseException as err:
        key = f"{where}.{err.full_key}" if err.full_key else where
        raise ValueError(f"{key}: {str(err).splitlines()[0]}") from None


def check_fields(obj: Any, schema: type, where: str) -> None:
    """Check the fields of ``obj`` (an instance of a subclass of ``schema``) with
    :func:`checked` and store them back, nested mappings converted to their dataclasses."""
    clean = checked(schema, {f.name: getattr(obj, f.name) for f in fields(schema)}, where)
    for f in fields(schema):
        setattr(obj, f.name, getattr(clean, f.name))

"""The settle state's changelog codec: a batch's store writes as compacted-topic records, and a
partition's state read back from them (:class:`Restored`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# Changelog encoding, as the settle table of the Faust agent wrote it (JSON key and value):
# key "<partition>|<store key>" for the machine's state, "<partition>#applied" for the offset.

def changelog_records(partition: int, writes: dict[str, Any], applied: int | None
                      ) -> list[tuple[bytes, bytes | None]]:
    """A batch's coalesced writes as changelog (key, value) bytes, tombstones as None, the
    applied offset last."""
    prefix = f"{partition}|"
    out: list[tuple[bytes, bytes | None]] = [
        (orjson.dumps(prefix + key), None if value is None else orjson.dumps(value))
        for key, value in writes.items()]
    if applied is not None:
        out.append((orjson.dumps(f"{partition}#applied"), orjson.dumps(applied)))
    return out


@dataclass
class Restored:
    """One partition's state read back from its changelog partition."""

    base: dict[str, Any] = field(default_factory=dict)
    applied: int | None = None
    records: int = 0

    def add(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        """Replay one changelog record (later records win; a tombstone deletes)."""
        self.records += 1
        if key is None:
            return
        name = orjson.loads(key)
        if not isinstance(name, str):
            return
        if name == f"{partition}#applied":
            self.applied = None if value is None else orjson.loads(value)
            return
        prefix = f"{partition}|"
        if not name.startswith(prefix):
            return  # another partition's key: not ours
        if value is None:
            self.base.pop(name[len(prefix):], None)
        else:
            self.base[name[len(prefix):]] = orjson.loads(value)

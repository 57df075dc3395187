"""Seeded generator of realistic editor edit traces, in the binding wire format.

Why: the pipeline (settling, privacy filtering, training-example building) needs input that
looks like what an editor such as Zed sends, with every awkward case present: byte offsets
that differ from char offsets, typos fixed with backspaces, undos, renames, predictions that
are accepted, rejected, ignored or discarded, regions that settle by quiescence, TTL, a client
`settled` event or lost context, and privacy cases the server must drop. Real traces cannot be
committed, so we simulate a developer editing copies of real Python standard-library files.

Every event is consistent by construction: the simulator keeps the real text of each file,
applies every `edit` to it, and cuts excerpts from that text, so a consumer that replays the
edits over `initial_files(config)` sees exactly the excerpts the predictions carry.

Offsets on the wire are UTF-8 byte offsets. Internally the simulator works in Python char
indices (code points, hence always on UTF-8 char boundaries) and converts when emitting.

The package is the pure core of the generator; reading source files (and writing traces) is
the caller's: `editstream.sessions.generate` hands the standard library in as `SourceFiles`.

    config.py     wire constants, the session mix, `GenerateConfig`
    text.py       text helpers: wire edits, unified diffs, typing bursts, code lines
    sources.py    the caller's source files, vetted and picked by seed
    emitter.py    a session's state and the wire events it emits
    session.py    the edit simulator: the developer's behaviours and prediction plans
    simulate.py   many sessions, interleaved into one event stream
    truth.py      the answer key (`ground_truth`), settled by the pipeline's rules
"""

from streams.generate.config import (
    CLIENT_QUIET_MS,
    CLIENT_TTL_MS,
    DISABLED_GLOBS,
    EVENT_TYPES,
    MAX_REGION_BYTES,
    MODEL_VERSIONS,
    NON_ASCII_LINES,
    OUTCOMES,
    PKG_NAMES,
    QUIESCENCE_MS,
    SECRET_PATHS,
    TTL_MS,
    WIRE_VERSION,
    GenerateConfig,
)
from streams.generate.simulate import simulate
from streams.generate.sources import SourceFiles, usable_source
from streams.generate.text import apply_edit, is_disabled_path, unified_diff
from streams.generate.truth import ground_truth

__all__ = [
    "CLIENT_QUIET_MS",
    "CLIENT_TTL_MS",
    "DISABLED_GLOBS",
    "EVENT_TYPES",
    "MAX_REGION_BYTES",
    "MODEL_VERSIONS",
    "NON_ASCII_LINES",
    "OUTCOMES",
    "PKG_NAMES",
    "QUIESCENCE_MS",
    "SECRET_PATHS",
    "TTL_MS",
    "WIRE_VERSION",
    "GenerateConfig",
    "SourceFiles",
    "apply_edit",
    "ground_truth",
    "is_disabled_path",
    "simulate",
    "unified_diff",
    "usable_source",
]

"""Failure rows: one JSON line per input that could not be processed (which, where, why)."""

from __future__ import annotations

import dataclasses
import json

# Stages, in pipeline order.
# "process": the worker process running a row crashed or ran past --video_timeout_s.
STAGES = ("manifest", "fetch", "decode", "pose", "render", "flow", "encode", "process")
MAX_ERROR_CHARS = 1000  # a failure row keeps at most this much of an error message


@dataclasses.dataclass(frozen=True)
class Failure:
    """An input that was not written: its id, path, the stage that failed and the reason."""

    id: str
    path: str
    stage: str
    error: str

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r}: expected one of {list(STAGES)}")

    @classmethod
    def from_exception(cls, id: str, path: str, stage: str, exc: BaseException) -> Failure:
        """A failure whose reason is `exc`'s type and message, cut to MAX_ERROR_CHARS.

        A long message keeps its head and its tail (where the reason usually is, after a long
        path), joined by "...".
        """
        text = f"{type(exc).__name__}: {exc}"
        if len(text) > MAX_ERROR_CHARS:
            head = (MAX_ERROR_CHARS - 3) * 3 // 5
            tail = MAX_ERROR_CHARS - 3 - head
            text = text[:head] + "..." + text[-tail:]
        return cls(id=id, path=path, stage=stage, error=text)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

"""What every model-backed block (audio, vision) shares: the sessions it runs, and closing them."""

from __future__ import annotations

__all__ = ["SessionBlock"]


class SessionBlock:
    """A block that runs one or more :class:`edgesdk.Session` objects (``sessions``: name -> session)."""

    @property
    def sessions(self) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        """Free the models' native memory now (also on leaving a ``with`` block)."""
        for s in self.sessions.values():
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

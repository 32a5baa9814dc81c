"""kadnode: a Kademlia DHT node that speaks the BitTorrent Mainline DHT (BEP 5).

The Python API is `kadnode.Node` (see docs/architecture.md); the daemon and CLI are `kadnode --help`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Node", "NodeInfo", "Settings", "SigningKey", "__version__"]

from kadnode.core.bep44 import SigningKey
from kadnode.settings import Settings
from kadnode.types import NodeInfo

if TYPE_CHECKING:
    from kadnode.runtime.node import Node


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import kadnode.wire...` stays light (no asyncio runtime).
    if name == "Node":
        from kadnode.runtime.node import Node

        return Node
    raise AttributeError(name)

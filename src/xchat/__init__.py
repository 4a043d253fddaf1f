"""XChat: an end-to-end encrypted messenger.

Layers (see ARCHITECTURE.md): ``crypto`` and ``protocol`` are pure (sans-I/O);
``server`` is the relay; ``client`` is the SDK; ``cli`` and ``app`` are the apps.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

"""Provider sandbox: fake provider REST APIs that place simulated calls and send callbacks
signed the way the real providers sign them. For tests, the local stack and platform teams."""

from sandbox.core import Fate, Sandbox

__all__ = ["Fate", "Sandbox"]

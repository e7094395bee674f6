"""The in-process transport: remote steps and nudges inside one event loop.

Messages take the same path a network transport's do: encoded to JSON on send, decoded and
validated on receipt, results sent back through ``send_result``, and a task or result whose
handling raised delivered again. Switching to a network transport changes no semantics.
"""

from durable.transports.inprocess.transport import InProcessTransport

__all__ = ["InProcessTransport"]

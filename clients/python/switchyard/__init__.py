"""Python client for Switchyard, the adaptive LLM router.

`SwitchyardClient` wraps the generated `switchyard.v1` stubs: `route()` asks which model to call,
`feedback()` reports what happened, and `call()` does both around your model call, timing it.
The raw messages and stub are in `switchyard.v1.switchyard_pb2` and `switchyard_pb2_grpc`.
"""

from switchyard.client import Call, SwitchyardClient, SwitchyardError
from switchyard.v1 import switchyard_pb2 as pb

__all__ = ["Call", "SwitchyardClient", "SwitchyardError", "pb"]

"""``audiodiff serve``: the vocoder over HTTP, for a TTS service on the same machine.

:mod:`.app` (the aiohttp server and its endpoints), :mod:`.inputs` (limits, query options, the
checks of untrusted request bodies), :mod:`.batching` (dynamic batching on the device of plain
requests and of the open streams' windows alike), :mod:`.streaming` (one open stream: its frames
through a ``StreamCursor``, its windows to the batcher). aiohttp is the
optional ``serve`` extra (``pip install 'audiodiff[serve]'``): importing this package needs it.
"""

from audiodiff.serve.app import BackgroundServer, make_app, serve_forever
from audiodiff.serve.inputs import FORMATS, Limits, RequestError

__all__ = ["BackgroundServer", "FORMATS", "Limits", "RequestError", "make_app", "serve_forever"]

"""One renderer per wire format for the answer events of ``chat.types``.

- ``websocket``: the browser chat's JSON frames (``start``, ``sources``, ``token``, ``end``, ``error``);
- ``sse``: Server-Sent Events of the REST API (the same events, ``event: <type>``);
- ``openai``: OpenAI's ``chat.completion`` body, ``chat.completion.chunk`` stream and error shape.

Adapters pick one and never format events themselves; errors of the platform's one family
(``config.errors.PlatformError``) render through the same modules.
"""

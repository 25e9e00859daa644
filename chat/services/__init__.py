"""The chat service: what every adapter (websocket, REST/SSE, OpenAI endpoint) calls.

- ``answer_pipeline``: ``reply`` / ``complete`` (the request path: admit, store, replay or
  generate, finish, settle) and ``collect``;
- ``answer_plan``: validation and the plan of an answer (scope, history, system prompt);
- ``answer_store``: the SQL steps of an answer (question + empty answer first, one final write);
- ``model_routing``: which model group answers (name or alias, the caller's access, fallbacks);
- ``embeddings``: ``/v1/embeddings`` (the search pipeline's vectors behind the gateway);
- ``conversations``: REST writes (create, delete, feedback).
"""

from chat.services.answer_pipeline import collect, complete, reply
from chat.services.conversations import conversation_create, conversation_delete, feedback_set
from chat.types import ChatOptions

__all__ = [
    "ChatOptions",
    "collect",
    "complete",
    "conversation_create",
    "conversation_delete",
    "feedback_set",
    "reply",
]

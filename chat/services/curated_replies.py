"""Curated replies: saving one computes its question's vector (matching is in chat.answering.curated)."""

from __future__ import annotations

from chat.models import CuratedReply
from inference import services as inference
from knowledge.models import vector_to_bytes


def curated_reply_save(*, reply: CuratedReply) -> CuratedReply:
    """Store the reply with the embedding of its question (the same model as the questions it matches).

    Raises the inference layer's error when the embedding service is down: nothing is saved then,
    because a reply without a vector would never be given.
    """
    vector = inference.embed_query_sync(reply.question.strip())
    reply.question = reply.question.strip()
    reply.embedding = vector_to_bytes(vector)
    reply.embedding_model = inference.embedding_model_name()
    reply.save()
    return reply

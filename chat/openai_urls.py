from django.urls import path

from chat import openai_api

urlpatterns = [
    path("chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
    path("embeddings", openai_api.embeddings, name="openai-embeddings"),
    path("models", openai_api.models, name="openai-models"),
    # Model names may hold "/" (e.g. Qwen/Qwen2.5-7B-Instruct).
    path("models/<path:name>", openai_api.model_detail, name="openai-model"),
]

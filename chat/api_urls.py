from django.urls import path

from chat import api, exports

urlpatterns = [
    path("conversations/", api.ConversationListView.as_view(), name="chat-conversations"),
    path("conversations/<uuid:conversation_id>/", api.ConversationDetailView.as_view(), name="chat-conversation"),
    path("conversations/<uuid:conversation_id>/messages/", api.MessageListView.as_view(), name="chat-messages"),
    path("messages/<int:message_id>/feedback/", api.FeedbackView.as_view(), name="chat-feedback"),
    path("exports/conversations/", exports.ConversationExportView.as_view(), name="chat-export-conversations"),
]

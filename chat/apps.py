from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from chat import config
        from chat.answering import curated
        from chat.models import ChatSettings, CuratedReply

        # The cached snapshots follow an edit at once in this process (others within CHAT_SETTINGS_TTL_S).
        post_save.connect(config.invalidate, sender=ChatSettings, dispatch_uid="chat-settings-invalidate")
        post_save.connect(curated.invalidate, sender=CuratedReply, dispatch_uid="curated-replies-saved")
        post_delete.connect(curated.invalidate, sender=CuratedReply, dispatch_uid="curated-replies-deleted")

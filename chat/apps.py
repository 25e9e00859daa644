from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from chat import config
        from chat.models import ChatSettings

        # The cached snapshot follows an edit at once in this process (others within CHAT_SETTINGS_TTL_S).
        post_save.connect(config.invalidate, sender=ChatSettings, dispatch_uid="chat-settings-invalidate")

from django.urls import path

from chat.gateway import views

app_name = "gateway"
urlpatterns = [path("whoami", views.whoami, name="whoami")]

from django.http import HttpResponse, JsonResponse
from django.urls import path


def index(request):
    return HttpResponse("Hello from Django over WSGI")


def read_item(request, item_id):
    return JsonResponse({"item_id": item_id, "q": request.GET.get("q")})


urlpatterns = [
    path("", index),
    path("items/<int:item_id>", read_item),
]

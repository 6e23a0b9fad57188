"""A one-file Django project with one sync view, for the WSGI benchmark:
`ferrocorn --interface wsgi examples.django_bench:application` (GET /json)."""

import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()


def json_view(request):
    return JsonResponse({"message": "Hello, world!", "items": [1, 2, 3]})


urlpatterns = [path("json", json_view)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

"""A one-file Django project for tests/test_wsgi.py: `wsgi_django:application`."""

import django
from django.conf import settings
from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

settings.configure(
    DEBUG=False,
    SECRET_KEY="test-only",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()


def index(request):
    return HttpResponse("Hello from Django")


def info(request):
    return JsonResponse(
        {
            "path": request.path,
            "script_name": request.META["SCRIPT_NAME"],
            "secure": request.is_secure(),
            "host": request.get_host(),
            "query": request.GET.dict(),
        }
    )


@csrf_exempt
def form(request):
    return JsonResponse({"method": request.method, "fields": request.POST.dict()})


def stream(request):
    return StreamingHttpResponse((f"chunk {i}\n" for i in range(4)), content_type="text/plain")


def file(request):
    return FileResponse(open(__file__, "rb"), content_type="text/plain")  # noqa: SIM115


urlpatterns = [
    path("", index),
    path("info", info),
    path("form", form),
    path("stream", stream),
    path("file", file),
]

from wsgiref.validate import validator  # noqa: E402

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = validator(get_wsgi_application())

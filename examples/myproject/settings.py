# A Django project served over WSGI: no database, no templates.
SECRET_KEY = "change-me"  # use a long random value in production, kept out of the code
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "myproject.urls"
INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
USE_TZ = True

"""Development: `make run`. Safe defaults, nothing to configure."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="django-insecure-local-development-key-not-for-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
# The demo data (seed_demo) is a São Paulo pallet maker's: its emails and public pages
# carry that company's name and address, as a real install's carry its own.
FUNIL_SENDER_NAME = env("FUNIL_SENDER_NAME", default="Paletes Bandeirantes")
FUNIL_SENDER_ADDRESS = env("FUNIL_SENDER_ADDRESS", default="Av. das Indústrias, 1000 · Guarulhos, SP · 07000-000")
# Links in emails and the form snippet point at the server `make run` started (HOST/PORT).
FUNIL_BASE_URL = env(
    "FUNIL_BASE_URL", default=f"http://{env('FUNIL_HOST', default='127.0.0.1')}:{env('FUNIL_PORT', default='8000')}"
)

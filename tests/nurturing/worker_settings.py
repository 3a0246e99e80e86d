"""Settings of the real Celery worker the nurturing proofs start: the test settings,
with email sent by SMTP to the test's own server (FUNIL_TEST_EMAIL_URL)."""

from config.settings.test import *  # noqa: F403
from config.settings.test import env

vars().update(env.email_url("FUNIL_TEST_EMAIL_URL"))
EMAIL_BACKEND = "nurturing.mail.EmailBackend"
FUNIL_NURTURE_SENDING_GROUP = env.int("FUNIL_NURTURE_SENDING_GROUP", default=20)
EMAIL_TIMEOUT = 10
FUNIL_BASE_URL = "https://funil.example.com"
DEFAULT_FROM_EMAIL = "Paletes Exemplo <news@paletes.example>"
FUNIL_SENDER_NAME = "Paletes Exemplo"
FUNIL_SENDER_ADDRESS = "Rua das Tábuas, 100 - São Paulo/SP"

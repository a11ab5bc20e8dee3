"""Build the Django corpus database: Django's own apps' migrations, run by Django.

``python build.py URL``: configures a project with django.contrib's auth, contenttypes,
sessions and admin (the apps ``django-admin startproject`` installs), runs ``migrate``
exactly as a project would (the DDL is Django's, per engine: on PostgreSQL it adds the
``*_like`` varchar_pattern_ops indexes), then writes a few rows through the ORM.
"""

from __future__ import annotations

import sys

import django
from django.conf import settings
from sqlalchemy.engine import make_url


def database(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": url.split(":///", 1)[1]}
    u = make_url(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": u.database,
        "USER": u.username or "",
        "PASSWORD": u.password or "",
        "HOST": u.host or u.query.get("host", ""),
        "PORT": str(u.port or ""),
    }


def main(url: str) -> None:
    settings.configure(
        DATABASES={"default": database(url)},
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
        ],
        USE_TZ=True,
        SECRET_KEY="corpus",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )
    django.setup()
    from django.contrib.admin.models import ADDITION, LogEntry
    from django.contrib.auth.models import Group, User
    from django.contrib.contenttypes.models import ContentType
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    admin = User.objects.create_superuser("admin", "admin@example.com", "pw")
    User.objects.create_user("alice", "", "pw")  # no e-mail: Django stores ''
    Group.objects.create(name="editors")
    session = SessionStore()
    session["user"] = admin.pk
    session.create()
    LogEntry.objects.create(
        user=admin,
        content_type=ContentType.objects.get_for_model(User),
        object_id=str(admin.pk),
        object_repr="admin",
        action_flag=ADDITION,
    )


if __name__ == "__main__":
    main(sys.argv[1])

"""``celery -A celery_autoscale.worker worker``: the user's app, with the runtime, and no code change.

The app comes from ``CELERY_AUTOSCALE_APP`` (``module:attribute``, e.g.
``myproject.celery:app``). Importing this module does nothing; Celery's ``-A`` lookup reads its
``app`` attribute, which imports the user's app and calls :func:`celery_autoscale.install` on
it (PEP 562 module ``__getattr__``). An app that already called ``install`` is not changed twice.

Why a wrapper module: Celery resolves ``-A`` to an attribute of a module and offers no hook that
runs before the worker reads the configuration for an app it did not create; a preload option
would need the user's app to declare it. The wrapper needs nothing of the app.
"""

from __future__ import annotations

__all__ = ["app"]


def __getattr__(name: str):
    if name != "app":
        raise AttributeError(name)
    from ._loader import load_app

    globals()["app"] = loaded = load_app()
    return loaded

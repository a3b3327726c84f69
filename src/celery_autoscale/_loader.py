"""Find a Celery app by its import path, and install the runtime on it."""

from __future__ import annotations

import importlib
import os
import sys

from celery import Celery

from ._install import install
from ._settings import ConfigError

__all__ = ["APP_VARIABLE", "AppLoadError", "load_app"]

#: The environment variable naming the user's app (``module:attribute``) for the wrapper
#: module :mod:`celery_autoscale.worker` and the CLIs.
APP_VARIABLE = "CELERY_AUTOSCALE_APP"


class AppLoadError(ImportError):
    """The app path cannot be imported or does not name a Celery app; the message is one line."""


def load_app(path: str | None = None):
    """The Celery app at ``path`` (``"module:attribute"`` or ``"module"``), with the runtime installed.

    ``module`` alone looks for ``app`` or ``celery`` in it, as ``celery -A`` does. Without a
    path, ``CELERY_AUTOSCALE_APP`` is read; without that, a bare app (broker from
    ``CELERY_BROKER_URL``) serves producers, Flower and the helm test.

    Raises:
        AppLoadError: the module or attribute is missing, or is not a Celery app.
        celery_autoscale.ConfigError: the runtime refuses the app's settings.
    """
    path = path if path is not None else os.environ.get(APP_VARIABLE, "")
    if not path.strip():
        return install(Celery("celery_autoscale"))
    module_name, _, attribute = path.strip().partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `celery -A` imports from the working directory
    if not module_name or module_name.startswith("."):
        raise AppLoadError(f"{path!r} does not name a module: give module:attribute, e.g. myproject.celery:app")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppLoadError(f"cannot import the app module {module_name!r}: {exc}") from None
    except SyntaxError as exc:
        raise AppLoadError(f"cannot import the app module {module_name!r}: a syntax error in "
                           f"{exc.filename}, line {exc.lineno}") from None
    except ConfigError:  # install() in the user's module refused a setting: that line is the message
        raise
    except Exception as exc:  # the user's module raised while it was imported: its error, in one line
        raise AppLoadError(f"cannot import the app module {module_name!r}: it raised "
                           f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
    names = [attribute] if attribute else ["app", "celery"]
    for name in names:
        found = getattr(module, name, None)
        if isinstance(found, Celery):
            return install(found)
    raise AppLoadError(f"{path!r} does not name a Celery app (looked for {', '.join(names)})")

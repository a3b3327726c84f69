"""Flower configuration file, passed by :mod:`celery_autoscale.flower` as ``--conf``.

Reads the basic-auth credentials from files mounted from a Secret, so no secret sits in an
environment variable: ``username`` and ``password`` in the folder ``BASIC_AUTH_DIR``. (The
variable must not start with ``FLOWER_``: Flower reads every such variable as one of its
options and stops at an unknown one.) Without ``BASIC_AUTH_DIR`` Flower runs unauthenticated.
This file is executed by Flower, never imported by the runtime.
"""

import os
from pathlib import Path

_auth_dir = os.environ.get("BASIC_AUTH_DIR")
if _auth_dir:
    _user = (Path(_auth_dir) / "username").read_text().strip()
    _password = (Path(_auth_dir) / "password").read_text().strip()
    basic_auth = [f"{_user}:{_password}"]

# The image of the sample app: the celery_autoscale runtime and the `tasks` app. Workers
# (`celery -A celery_autoscale.worker worker` with CELERY_AUTOSCALE_APP=tasks.app:app), Flower
# (`python -m celery_autoscale.flower`) and the helm test (`python -m celery_autoscale.roundtrip`).
# Your own image needs only the runtime beside your app: `pip install "celery-autoscale[flower,kubernetes,beat]"`
# (and `gevent` for `pool: gevent`)
# from a wheel built here (`make dist`) or the repository (`kubernetes`: the reconciler's pod deletion cost).

# The official python image; images/build.sh gives a stand-in made from Debian's packages where no
# registry is reachable (images/README.md).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- build: wheels of the runtime and its dependencies (the wheel holds celery_autoscale only) ----
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/celery_autoscale ./src/celery_autoscale
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[flower,kubernetes,beat,gevent]"

# ---- runtime: no compiler, no pip cache, a numeric non-root user ---------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "celery-autoscale[flower,kubernetes,beat,gevent]==0.3.0" \
    && rm -rf /wheels \
    && groupadd --gid 10001 celery \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin celery
# The sample app is copied, never installed: your own app goes here the same way.
COPY src/tasks /app/tasks
USER 10001:10001
WORKDIR /app
ENV PYTHONPATH=/app
EXPOSE 9808 5555
# Exec form, no shell: SIGTERM reaches the Celery main process (warm shutdown).
ENV CELERY_AUTOSCALE_APP=tasks.app:app
ENTRYPOINT []
CMD ["celery", "-A", "celery_autoscale.worker", "worker", "--loglevel=INFO"]

"""client-go's list-and-watch for a namespace's pods (the e2e cluster)."""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger(__name__)


def list_and_watch(api, namespace: str, selector: str, on_list, on_event, stop: threading.Event,
                   after_round=None) -> None:
    """Until ``stop`` is set: list the pods of ``selector`` and call ``on_list(pods)``, then watch
    from the list's resourceVersion for 5 s calling ``on_event(type, pod)``; then ``after_round()``;
    again. A pod deleted between two watches sends its DELETED event to neither: ``on_list`` finds
    it gone. An error (the API server restarting, a watch expiring) is logged and the pods are
    listed again a second later."""
    from kubernetes import watch

    while not stop.is_set():
        try:
            listed = api.list_namespaced_pod(namespace, label_selector=selector)
            on_list(listed.items)
            for event in watch.Watch().stream(api.list_namespaced_pod, namespace, label_selector=selector,
                                              timeout_seconds=5, resource_version=listed.metadata.resource_version):
                on_event(event["type"], event["object"])
                if stop.is_set():
                    break
        except Exception:
            logger.exception("pod watch of %s failed; listing again", namespace)
            time.sleep(1)
        if after_round is not None:
            after_round()

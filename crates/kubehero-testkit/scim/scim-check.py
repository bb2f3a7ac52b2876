#!/usr/bin/env python3
"""Run the scim2-tester SCIM 2.0 compliance checks (RFC 7643/7644) against a SCIM base URL.

usage: SCIM_TOKEN=... scim-check.py BASE_URL [--json OUT] [--trace OUT] [--include TAG ...]
                                            [--exclude TAG ...] [--resource-type NAME ...]

The bearer token comes from $SCIM_TOKEN, never from argv (argv is visible to every local user) and is never
printed; $SCIM_CA_FILE, if set, is the PEM bundle that verifies an https server. Prints one line per check
and a summary; --json writes every result (written last, so its presence means the run completed); --trace
writes one JSON line per HTTP exchange (method, URL, status, bodies and ETag headers; never the Authorization
header). Exits 1 when a check is ERROR or CRITICAL, 0 otherwise. Runs with the python of the venv scripts/test
installs into $KUBEHERO_PEERS_DIR/scim/venv (kubehero-testkit's `scim` module does that).
"""
import argparse
import json
import os
import ssl
import sys
from collections import Counter

from httpx2 import Client  # scim2-client 0.13 ships an httpx2 engine
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server

DATA_LIMIT = 4000


def printable(value):
    """Debugging data (models, responses, exceptions) as a bounded string."""
    if value is None:
        return None
    if hasattr(value, "status_code") and hasattr(value, "text"):
        text = f"HTTP {value.status_code} {value.text}"
    else:
        try:
            text = json.dumps(value, default=lambda o: o.model_dump(mode="json", by_alias=True, exclude_none=True)
                              if hasattr(o, "model_dump") else repr(o))
        except Exception:  # noqa: BLE001 - debugging aid only
            text = repr(value)
    return text if len(text) <= DATA_LIMIT else text[:DATA_LIMIT] + "…"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--json")
    ap.add_argument("--trace")
    ap.add_argument("--include", nargs="*")
    ap.add_argument("--exclude", nargs="*")
    ap.add_argument("--resource-type", nargs="*")
    a = ap.parse_args()

    token = os.environ.get("SCIM_TOKEN")
    if not token:
        sys.exit("scim-check.py: set SCIM_TOKEN to the SCIM bearer token")
    verify = True
    if os.environ.get("SCIM_CA_FILE"):
        verify = ssl.create_default_context(cafile=os.environ["SCIM_CA_FILE"])

    hooks = {}
    if a.trace:
        trace = open(a.trace, "w", encoding="utf-8")

        def log_response(response):
            response.read()
            request = response.request
            trace.write(json.dumps({
                "method": request.method,
                "url": str(request.url),
                "if_match": request.headers.get("if-match"),
                "if_none_match": request.headers.get("if-none-match"),
                "request": request.content.decode("utf-8", "replace") or None,
                "status": response.status_code,
                "content_type": response.headers.get("content-type"),
                "etag": response.headers.get("etag"),
                "response": response.text or None,
            }) + "\n")
            trace.flush()

        hooks = {"response": [log_response]}

    http = Client(base_url=a.url, headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=30,
                  trust_env=False, event_hooks=hooks)
    results = check_server(SyncSCIMClient(http),
                           include_tags=set(a.include) if a.include else None,
                           exclude_tags=set(a.exclude) if a.exclude else None,
                           resource_types=a.resource_type)
    for r in results:
        reason = (r.reason or "").replace("\n", " | ")
        print(f"{r.status.name:10} {r.resource_type or '-':6} {r.title}: {reason}")
    counts = Counter(r.status.name for r in results)
    print("SUMMARY", dict(counts))
    if a.json:
        out = [{
            "status": r.status.name,
            "resource_type": r.resource_type,
            "title": r.title or "",
            "description": (r.description or "").strip(),
            "reason": r.reason or "",
            "tags": sorted(r.tags),
            "data": printable(r.data),
        } for r in results]
        tmp = a.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, a.json)
    sys.exit(1 if counts.get("ERROR") or counts.get("CRITICAL") else 0)


if __name__ == "__main__":
    main()
